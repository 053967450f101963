"""The one Litestar app: MCP at /mcp, REST at /api/v1, health, metadata and the OpenAPI document."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from litestar import Litestar, asgi
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme, Server
from litestar.types import Receive, Scope, Send
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.authentication import AuthCredentials

from memory.errors import LogIntegrityError, MemoryServiceError, StorageError
from memory.server.auth import (
    PRINCIPAL_SCOPE_KEY,
    READ_SCOPE,
    WRITE_SCOPE,
    BearerAuthMiddleware,
    LocalTokenVerifier,
    Principal,
    TokenVerifier,
)
from memory.server.config import record_public_url
from memory.server.health import HealthController
from memory.server.logs import RequestLogMiddleware, logging_config
from memory.server.request_ids import RequestIdMiddleware
from memory.server.mcp_tools import build_mcp_server
from memory.server.metrics import ERRORS, ToolCallTally, http_metrics, metrics_handler
from memory.server.oauth.endpoints import build_oauth_controllers
from memory.server.oauth.external import ExternalTokenVerifier, IssuerRoutingVerifier
from memory.server.oauth.ratelimit import oauth_rate_limit, principal_rate_limit
from memory.server.oauth.storage import AuthStore
from memory.server.rest import build_rest_controller, domain_error_response
from memory.server.security_headers import add_security_headers
from memory.server.settings import ServerSettings, server_version
from memory.server.shared import shared_stores
from memory.server.web import build_web_controllers, web_template_config
from memory.server.wellknown import RESOURCE_METADATA_PATH, WellKnownController
from memory.service import MemoryService
from memory.signing import KeyRing

__all__ = ["create_app"]

logger = logging.getLogger("memory.server")
# How often the tool-call counts `memory stats` reads are written (and at shutdown).
_TALLY_FLUSH_SECONDS = 30


class _McpEndpoint:
    """Hands /mcp requests to the session manager of the running lifespan, as the SDK's own
    auth layer would have prepared them: the caller as an `AuthenticatedUser`, so a session
    can only be resumed with the credentials of the principal that opened it."""

    def __init__(self, server: MCPServer, settings: ServerSettings):
        self._server = server
        self._settings = settings
        self._handle: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # A session manager runs once; a fresh one per lifespan lets the app start again. Building
        # the SDK's Starlette app is the public way to get one; the app itself is not used.
        self._server.streamable_http_app(
            max_request_body_size=self._settings.max_body_bytes,
            transport_security=TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=self._settings.trusted_hosts(),
                allowed_origins=self._settings.trusted_origins(),
            ),
        )
        manager = self._server.session_manager
        async with manager.run():
            # The SDK's request-state binding reads the caller from the context variable this sets.
            self._handle = AuthContextMiddleware(manager.handle_request)
            try:
                yield
            finally:
                self._handle = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._handle is None:
            raise RuntimeError("the MCP session manager is not running (app lifespan not started)")
        principal: Principal = scope[PRINCIPAL_SCOPE_KEY]  # type: ignore[typeddict-item]
        token = AccessToken(
            token="", client_id=principal.client_id, scopes=sorted(principal.scopes),
            expires_at=principal.expires_at, subject=principal.identity.sub,
            claims={"iss": principal.identity.iss},
        )
        scope["user"] = AuthenticatedUser(token)
        scope["auth"] = AuthCredentials(sorted(principal.scopes))
        await self._handle(scope, receive, send)


def _log_failure(exc: Exception, scope: Scope) -> None:
    path = scope.get("path")
    if isinstance(exc, LogIntegrityError | StorageError):
        # The caller got a 503/507 with the message; the operator needs to hear about it too.
        ERRORS.labels(type(exc).__name__).inc()
        logger.error("%s on %s: %s", type(exc).__name__, path, exc)
    elif not isinstance(exc, HTTPException | MemoryServiceError):
        # Answered with a bare 500: the trace is only here.
        ERRORS.labels("unexpected").inc()
        logger.error("unexpected error on %s", path, exc_info=exc)


async def _keep_flushing(tally: ToolCallTally, store: AuthStore) -> None:
    while True:
        await anyio.sleep(_TALLY_FLUSH_SECONDS)
        try:
            await anyio.to_thread.run_sync(tally.flush, store)
        except Exception:  # noqa: BLE001 - a full disk must not stop the server; the next flush retries
            logger.exception("could not save the tool-call counts")


def _verifier(settings: ServerSettings, keys: KeyRing, oauth_store: AuthStore) -> TokenVerifier:
    local = LocalTokenVerifier(keys, issuer=settings.base_url, audience=settings.resource_url,
                               leeway_seconds=settings.token_leeway_seconds,
                               grant_revoked=oauth_store.grant_revoked, personal_tokens=oauth_store,
                               personal_token_max_ttl=settings.personal_token_max_ttl_seconds,
                               access_token_max_ttl=settings.access_token_ttl_seconds,
                               aliases=settings.base_urls)
    if not settings.external_idp:
        return local
    assert settings.idp_issuer is not None and settings.idp_jwks_url is not None
    external = ExternalTokenVerifier(issuer=settings.idp_issuer, audience=settings.idp_audience or settings.resource_url,
                                     jwks_url=settings.idp_jwks_url, leeway_seconds=settings.token_leeway_seconds)
    # `memory token` keeps working for scripts beside the provider's tokens.
    return IssuerRoutingVerifier({**dict.fromkeys(settings.base_urls, local), settings.idp_issuer: external})


def _cors(settings: ServerSettings) -> CORSConfig | None:
    if not settings.cors_origins:
        return None
    # Bearer tokens, not cookies: no credentials mode, so no origin can ride on a browser session.
    return CORSConfig(
        allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version",
                       "Last-Event-ID"],
        expose_headers=["WWW-Authenticate", "Mcp-Session-Id", "Mcp-Protocol-Version", "Retry-After"],
        allow_credentials=False, max_age=600,
    )


def _openapi(settings: ServerSettings) -> OpenAPIConfig:
    base = settings.base_url
    scopes = {READ_SCOPE: "Read your memories", WRITE_SCOPE: "Store, change and erase your memories"}
    return OpenAPIConfig(
        title="Memory",
        version=server_version(),
        description="Your long-term memory for AI assistants. OAuth 2.1 authorization code flow with PKCE "
                    "(S256); or a bearer token from `memory token`.",
        servers=[Server(url=base)],
        path="/schema",
        render_plugins=[JsonRenderPlugin()],
        use_handler_docstrings=True,
        components=Components(security_schemes={
            "oauth2": SecurityScheme(
                type="oauth2",
                description="Authorization code with PKCE (S256).",
                flows=OAuthFlows(authorization_code=OAuthFlow(
                    authorization_url=f"{base}/authorize", token_url=f"{base}/token", scopes=scopes,
                )),
            ),
            "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
        }),
    )


def open_service(settings: ServerSettings, embedding_caches=None, replica: int | None = None) -> MemoryService:
    """The service over the logs of record `settings` names: PostgreSQL with `database_url`,
    else SQLite files under `data_dir`; the keys from `keys_dir` (default `<data_dir>/keys`);
    `replica`: this worker process's slot (`memory serve --workers N`)."""
    from memory.logs import open_log_directory
    from projections.embedder import default_embedder

    keys = KeyRing(settings.data_dir, keys_dir=settings.keys_dir)
    return MemoryService(settings.data_dir, default_embedder(),
                         logs=open_log_directory(settings.data_dir, keys, settings.database_url),
                         embedding_caches=embedding_caches, replica=replica)


def create_app(settings: ServerSettings, *, service: MemoryService | None = None,
               verifier: TokenVerifier | None = None, replica: int | None = None) -> Litestar:
    # What replicas share (accounts, grants, tokens, rate limits, embedding cache): in PostgreSQL
    # with a database URL, else SQLite and memory as one server has always kept them.
    shared = shared_stores(settings)
    oauth_store = shared.auth
    if service is None:
        service = open_service(settings, shared.embedding_caches, replica)
    if settings.database_url or settings.workers > 1:
        # Replicas, or worker processes, append to the same logs: each follows what the others wrote.
        service.follow_others(settings.log_poll_seconds)
    if verifier is None:
        verifier = _verifier(settings, service.keys, oauth_store)
    auth = DefineMiddleware(BearerAuthMiddleware, verifier=verifier,
                            resource_metadata_url=settings.resource_metadata_url,
                            metadata_url_for=lambda host: f"{settings.base_url_for(host)}{RESOURCE_METADATA_PATH}")
    limit = principal_rate_limit(settings.call_rate_limit_per_minute)
    tally = ToolCallTally()
    endpoint = _McpEndpoint(build_mcp_server(service, settings, tally), settings)
    # With an external identity provider people sign in there: the built-in server stays out of the way.
    login_limit = oauth_rate_limit(settings.oauth_rate_limit_per_minute)
    oauth = [] if settings.external_idp else build_oauth_controllers(settings, service.keys, oauth_store, login_limit)
    web = build_web_controllers(settings, service, oauth_store, login_limit)

    @asgi("/mcp", copy_scope=True, middleware=[auth, limit], include_in_schema=False)
    async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint(scope, receive, send)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        # The model loads in the background: requests are accepted at once, /readyz tells when it is done.
        start_loading = getattr(service.embedder, "start_loading", None)
        if start_loading is not None:
            start_loading()
        try:
            # So that `memory token --data-dir ...` names this server without being told its URL.
            record_public_url(settings)
        except OSError as exc:
            logger.warning("could not record the public URL in %s: %s", settings.data_dir, exc.strerror)
        try:
            async with endpoint.running(), anyio.create_task_group() as tasks:
                tasks.start_soon(_keep_flushing, tally, oauth_store)
                yield
                tasks.cancel_scope.cancel()
        finally:
            await anyio.to_thread.run_sync(tally.flush, oauth_store)
            # The OAuth store stays open: the app may start again, and its writes are already durable.
            await anyio.to_thread.run_sync(service.close)

    return Litestar(
        route_handlers=[mcp, build_rest_controller(service, settings, [auth, limit]), HealthController, WellKnownController,
                        *oauth, *web, metrics_handler(service, None if settings.external_idp else oauth_store,
                                                      settings.metrics_token)],
        # The request id first: every layer below, and every log line, reads it.
        middleware=[RequestIdMiddleware, RequestLogMiddleware, http_metrics().middleware],
        template_config=web_template_config(),
        cors_config=_cors(settings),
        dependencies={
            "service": Provide(lambda: service, use_cache=True, sync_to_thread=False),
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
        },
        lifespan=[lifespan],
        exception_handlers={MemoryServiceError: domain_error_response},
        after_exception=[_log_failure],
        before_send=[add_security_headers],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=_openapi(settings),
        stores=shared.rate_limits or None,
        logging_config=logging_config(settings),
        debug=False,
    )

