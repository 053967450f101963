"""The built-in authorization server's HTTP surface: /authorize (login, consent), /token, /register,
/revoke and the RFC 8414 metadata. OAuth 2.1 with PKCE S256 only; access tokens are this server's
own EdDSA JWTs (`issue_token`), so `LocalTokenVerifier` checks them like those of `memory token`.

The SDK's handlers (`mcp.server.auth.handlers`) are Starlette endpoints built around a provider that
cannot fetch client metadata documents, add the RFC 9207 `iss` to the redirect or bind the audience
to `resource`; the protocol is small enough to state here directly.
"""

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import MediaType
from litestar.middleware import DefineMiddleware

from memory.errors import InvalidInput
from memory.server.auth import ALL_SCOPES, issue_token
from memory.server.logs import account_hash, log_fields
from memory.server.oauth.clients import (
    MAX_REGISTRATION_BYTES,
    Client,
    ClientError,
    MetadataDocuments,
    client_from_registration,
    is_metadata_url,
    known_scopes,
    redirect_matches,
)
from memory.server.oauth.metadata import authorization_server_metadata
from memory.server.oauth.pages import consent_page, error_page, login_page
from memory.server.oauth.passwords import password_matches
from memory.server.oauth.storage import AuthStore
from memory.server.oauth.store import Grant, PendingRequest
from memory.server.oauth.uris import parse_strict_url
from memory.server.settings import ServerSettings
from memory.signing import KeyRing
from memory.validation import MAX_DEPTH, check_text_fields

__all__ = ["build_oauth_controllers"]

logger = logging.getLogger("memory.server.oauth")

_CODE_TTL = 60.0
_PENDING_TTL = 600.0
_BROWSER_COOKIE = "memory_oauth_browser"
#: What an unauthenticated /authorize may make the server keep in a pending row (the client's name
#: and redirect URI are bounded at registration): RFC 6749 sets no limit on state, clients use ~43.
_MAX_STATE = 1024
#: RFC 7636 §4.2: S256 is base64url of a SHA-256 digest, without padding: exactly 43 characters.
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
#: Forms of the authorization endpoints are a few short fields.
_MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Whatever the verifier needs to get past `password_matches` when the account does not exist, so
# that a wrong name takes as long as a wrong password.
_DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        self.error = error
        self.description = description
        self.status = status


def _json_error(error: str, description: str, status: int = 400, headers: dict[str, str] | None = None) -> Response:
    return Response({"error": error, "error_description": description}, status_code=status,
                    headers={**_NO_STORE, **(headers or {})}, media_type=MediaType.JSON)


def _html(content: str, status: int = 200, cookies: list[Cookie] | None = None) -> Response:
    # The pages must never be framed (clickjacking the Allow button) nor cached. No form-action:
    # browsers apply it to the redirect after the consent form, which goes to the client's host.
    return Response(content, status_code=status, media_type=MediaType.HTML, cookies=cookies or [],
                    headers={**_NO_STORE, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                             "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                        "frame-ancestors 'none'"})


def _redirect(uri: str, params: dict[str, str]) -> Response:
    # Redirect URIs are strict (`uris`): no fragment, so a "?" can only start the query.
    separator = "&" if "?" in uri else "?"
    return Response(b"", status_code=302, headers={**_NO_STORE, "Location": f"{uri}{separator}{urlencode(params)}"})


def _pkce_matches(verifier: str, challenge: str) -> bool:
    if not 43 <= len(verifier) <= 128:
        return False
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii", "replace")).digest()).rstrip(b"=")
    return hmac.compare_digest(digest.decode(), challenge)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(encoded.strip()).decode().partition(":")
    except ValueError:
        return None
    return unquote(client_id), unquote(secret)


class _AuthorizationServer:
    """The state behind the endpoints: settings, keys, store and the metadata-document fetcher."""

    def __init__(self, settings: ServerSettings, keys: KeyRing, store: AuthStore, documents: MetadataDocuments):
        self.settings = settings
        self.keys = keys
        self.store = store
        self.documents = documents

    async def client(self, client_id: str) -> Client | None:
        if is_metadata_url(client_id, allow_loopback_http=self.settings.allow_loopback_client_metadata):
            return await self.documents.client(client_id)
        row = self.store.client(client_id)
        if row is None:
            return None
        metadata, secret_hash = row
        return Client(client_id=client_id, client_name=metadata["client_name"],
                      redirect_uris=metadata["redirect_uris"],
                      token_endpoint_auth_method=metadata["token_endpoint_auth_method"], secret_hash=secret_hash,
                      scopes=known_scopes(metadata["scope"]) if metadata.get("scope") else None)

    async def authenticated_client(self, request: Request, form: dict[str, str]) -> Client:
        basic = _basic_credentials(request)
        client_id = basic[0] if basic else form.get("client_id", "")
        if not client_id:
            raise _OAuthError("invalid_client", "client_id is required", 401)
        try:
            client = await self.client(client_id)
        except ClientError as exc:
            raise _OAuthError("invalid_client", exc.description, 401) from None
        if client is None:
            raise _OAuthError("invalid_client", "unknown client", 401)
        if not client.public:
            secret = basic[1] if basic else form.get("client_secret", "")
            if not self.store.secret_matches(secret, client.secret_hash):
                raise _OAuthError("invalid_client", "client authentication failed", 401)
        return client

    @staticmethod
    def scopes(requested: str | None, client: Client) -> list[str]:
        # A client that registered a scope gets at most that; one that registered none may ask for any.
        allowed = client.scopes or list(ALL_SCOPES)
        if not requested or not requested.split():
            # ChatGPT asks for no scope when it reconnects: everything the client may have.
            return allowed
        # Scopes of other servers (openid, offline_access) are ignored, not refused: the token says what it grants.
        granted = known_scopes(requested)
        if not granted:
            raise _OAuthError("invalid_scope", f"scopes must be among {' '.join(allowed)}")
        if not set(granted) <= set(allowed):
            raise _OAuthError("invalid_scope", f"this client registered only {' '.join(allowed)}")
        return granted

    @staticmethod
    def errors_may_redirect(client: Client, redirect_uri: str) -> bool:
        """Whether an error at /authorize may go to `redirect_uri` (RFC 6749 §4.1.2.1) rather than
        be shown here: only where that cannot make this server an open redirector (RFC 9700 §4.11.1).

        - a loopback redirect: it leads back to the person's own machine, where no third party listens;
        - a metadata document client redirecting to the host that publishes its document: whoever
          controls that host controls the client, so nobody else can name it.
        A dynamically registered client proved nothing (anyone may register any https redirect), so
        its errors, and every other client's, are a page here. After the consent page, which names
        where the person will be sent, the answer (a code, or access_denied) always goes to the redirect.
        """
        redirect = parse_strict_url(redirect_uri)
        if redirect.loopback:
            return True
        return client.document and parse_strict_url(client.client_id).host == redirect.host

    def check_resource(self, resource: str | None) -> str:
        # RFC 8707: the token is for one resource, this server's MCP endpoint (its base URL names it too).
        # Under any spelling of this server (`base_urls`: 127.0.0.1, localhost and [::1] when no public
        # URL is set), the resource is the one canonical URL the tokens' audience names.
        named = {url for base in self.settings.base_urls for url in (base, f"{base}/mcp")}
        if resource is None or resource.rstrip("/") in named:
            return self.settings.resource_url
        raise _OAuthError("invalid_target", f"this server only issues tokens for {self.settings.resource_url}")

    def tokens(self, grant: Grant) -> dict[str, Any]:
        access = issue_token(self.keys, issuer=self.settings.base_url, audience=grant.resource, subject=grant.user,
                             scopes=grant.scopes, ttl_seconds=self.settings.access_token_ttl_seconds,
                             client_id=grant.client_id, grant_id=grant.family)
        refresh = secrets.token_urlsafe(32)
        self.store.save_refresh(refresh, grant, self.settings.refresh_token_ttl_seconds)
        return {"access_token": access, "token_type": "Bearer", "expires_in": self.settings.access_token_ttl_seconds,
                "refresh_token": refresh, "scope": " ".join(grant.scopes)}


def _pending_fields(pending: PendingRequest) -> dict[str, str]:
    return {"request_id": pending.id, "csrf": pending.csrf}


def build_oauth_controllers(settings: ServerSettings, keys: KeyRing, store: AuthStore,
                            rate_limit: DefineMiddleware) -> list[type[Controller]]:
    server = _AuthorizationServer(settings, keys, store,
                                  MetadataDocuments(allow_loopback_http=settings.allow_loopback_client_metadata))
    issuer = settings.base_url
    # Absolute, so that the forms post back through whatever proxy path the public URL has.
    login_url, consent_url = f"{issuer}/authorize/login", f"{issuer}/authorize/consent"
    cookie_path = (urlsplit(issuer).path or "") + "/authorize"

    class AuthorizationServerMetadata(Controller):
        path = "/.well-known"
        include_in_schema = False

        @get(["/oauth-authorization-server", "/openid-configuration"], operation_id="authorizationServerMetadata")
        async def metadata(self) -> dict:
            return authorization_server_metadata(settings)

    class Authorization(Controller):
        path = "/authorize"
        include_in_schema = False

        @get("/", operation_id="authorize", middleware=[rate_limit])
        async def authorize(self, request: Request) -> Response:
            params = {k: v for k, v in request.query_params.items()}
            client_id = params.get("client_id", "")
            try:
                client = await server.client(client_id) if client_id else None
            except ClientError as exc:
                return _html(error_page(f"The client could not be verified: {exc.description}"), 400)
            if client is None:
                return _html(error_page("Unknown client: register it again from your assistant."), 400)
            redirect_uri = params.get("redirect_uri") or (client.redirect_uris[0] if len(client.redirect_uris) == 1
                                                          else "")
            if not redirect_uri or not redirect_matches(redirect_uri, client.redirect_uris):
                # Never redirect to an unregistered address: that is how codes get stolen.
                return _html(error_page(f"The redirect address {redirect_uri[:200]!r} is not registered for this "
                                        "client."), 400)
            state = params.get("state")
            back = {"iss": issuer, **({"state": state} if state is not None and len(state) <= _MAX_STATE else {})}
            try:
                if params.get("response_type") != "code":
                    raise _OAuthError("unsupported_response_type", "response_type must be code")
                if state is not None and len(state) > _MAX_STATE:
                    raise _OAuthError("invalid_request", f"state may be at most {_MAX_STATE} characters")
                if not params.get("code_challenge"):
                    raise _OAuthError("invalid_request", "PKCE is required: send code_challenge (S256)")
                if params.get("code_challenge_method") != "S256":
                    raise _OAuthError("invalid_request", "code_challenge_method must be S256")
                if not _S256_CHALLENGE.fullmatch(params["code_challenge"]):
                    raise _OAuthError("invalid_request", "code_challenge must be 43 base64url characters (S256)")
                scopes = server.scopes(params.get("scope"), client)
                resource = server.check_resource(params.get("resource"))
            except _OAuthError as exc:
                if not server.errors_may_redirect(client, redirect_uri):
                    return _html(error_page(f"The request of {client.client_name} is invalid: {exc.description}"),
                                 400)
                return _redirect(redirect_uri, {"error": exc.error, "error_description": exc.description, **back})
            browser = request.cookies.get(_BROWSER_COOKIE) or secrets.token_urlsafe(24)
            pending = PendingRequest(
                id=secrets.token_urlsafe(24), browser=browser, csrf=secrets.token_urlsafe(24), user=None,
                params={"client_id": client.client_id, "client_name": client.client_name,
                        "redirect_uri": redirect_uri, "state": state, "challenge": params["code_challenge"],
                        "scopes": scopes, "resource": resource})
            store.save_pending(pending, _PENDING_TTL)
            cookie = Cookie(key=_BROWSER_COOKIE, value=browser, path=cookie_path, httponly=True, samesite="lax",
                            secure=issuer.startswith("https://"), max_age=int(_PENDING_TTL))
            return _html(login_page(action=login_url, hidden=_pending_fields(pending),
                                    client_name=client.client_name), cookies=[cookie])

        async def _pending(self, request: Request, form: dict[str, str]) -> PendingRequest | Response:
            pending = store.pending(form.get("request_id", ""))
            if pending is None:
                return _html(error_page("This sign-in has expired. Start connecting again from your assistant."), 400)
            # Double-submit: the form must come from the page this browser was shown (CSRF).
            if not (hmac.compare_digest(form.get("csrf", ""), pending.csrf) and
                    hmac.compare_digest(request.cookies.get(_BROWSER_COOKIE, ""), pending.browser)):
                return _html(error_page("The form could not be verified. Start connecting again."), 403)
            return pending

        @post("/login", operation_id="authorizeLogin", status_code=200, middleware=[rate_limit],
              request_max_body_size=_MAX_FORM_BYTES)
        async def login(self, request: Request) -> Response:
            form = dict((await request.form()).items())
            pending = await self._pending(request, form)
            if isinstance(pending, Response):
                return pending
            username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
            stored = store.password_hash(username)
            matches = await anyio.to_thread.run_sync(password_matches, password, stored or _DUMMY_HASH)
            if stored is None or not matches:
                logger.info("failed sign-in from %s", request.client.host if request.client else "?",
                            extra=log_fields(user=account_hash(username[:64])))
                return _html(login_page(action=login_url, hidden=_pending_fields(pending), username=username,
                                        client_name=pending.params["client_name"],
                                        error="Wrong account name or password."), 401)
            csrf = secrets.token_urlsafe(24)
            store.log_in_pending(pending.id, username, csrf)
            params = pending.params
            return _html(consent_page(action=consent_url, hidden={"request_id": pending.id, "csrf": csrf},
                                      user=username, client_name=params["client_name"],
                                      redirect_host=urlsplit(params["redirect_uri"]).netloc, scopes=params["scopes"]))

        @post("/consent", operation_id="authorizeConsent", status_code=200, request_max_body_size=_MAX_FORM_BYTES)
        async def consent(self, request: Request) -> Response:
            form = dict((await request.form()).items())
            pending = await self._pending(request, form)
            if isinstance(pending, Response):
                return pending
            if pending.user is None:
                return _html(error_page("Sign in first."), 403)
            if not store.drop_pending(pending.id):
                return _html(error_page("This request was already answered."), 400)
            params = pending.params
            back = {"iss": issuer, **({"state": params["state"]} if params["state"] is not None else {})}
            if "approve" not in form:
                return _redirect(params["redirect_uri"], {"error": "access_denied",
                                                          "error_description": "the person declined", **back})
            code = secrets.token_urlsafe(32)
            store.save_code(code, Grant(family=secrets.token_hex(16), client_id=params["client_id"], user=pending.user,
                                        scopes=params["scopes"], resource=params["resource"],
                                        redirect_uri=params["redirect_uri"], challenge=params["challenge"]), _CODE_TTL)
            logger.info("a person allowed %s (%s)", params["client_name"], " ".join(params["scopes"]),
                        extra=log_fields(user=account_hash(pending.user)))
            return _redirect(params["redirect_uri"], {"code": code, **back})

    class Tokens(Controller):
        path = "/"
        include_in_schema = False

        @post("/token", operation_id="token", status_code=200, middleware=[rate_limit],
              request_max_body_size=_MAX_FORM_BYTES)
        async def token(self, request: Request) -> Response:
            form = {k: str(v) for k, v in (await request.form()).items()}
            try:
                client = await server.authenticated_client(request, form)
                grant_type = form.get("grant_type")
                if grant_type == "authorization_code":
                    body = self._exchange_code(client, form)
                elif grant_type == "refresh_token":
                    body = self._refresh(client, form)
                else:
                    raise _OAuthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
            except _OAuthError as exc:
                basic = {"WWW-Authenticate": 'Basic realm="memory"'} if exc.status == 401 else None
                return _json_error(exc.error, exc.description, exc.status, basic)
            return Response(body, status_code=200, headers=_NO_STORE, media_type=MediaType.JSON)

        def _exchange_code(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
            used = store.use_code(form.get("code", ""))
            if used is None:
                raise _OAuthError("invalid_grant", "unknown authorization code")
            grant, fresh = used
            if not fresh:
                logger.warning("an authorization code was used twice or late: its tokens are revoked",
                               extra=log_fields(user=account_hash(grant.user)))
                raise _OAuthError("invalid_grant", "the authorization code was already used or has expired")
            if grant.client_id != client.client_id:
                raise _OAuthError("invalid_grant", "the code was issued to another client")
            if form.get("redirect_uri", "") != grant.redirect_uri:
                raise _OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
            if not _pkce_matches(form.get("code_verifier", ""), grant.challenge):
                raise _OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
            if "resource" in form and server.check_resource(form["resource"]) != grant.resource:
                raise _OAuthError("invalid_target", "resource differs from the authorization request")
            if grant.user not in store.users():
                raise _OAuthError("invalid_grant", "the account no longer exists")
            return server.tokens(grant)

        def _refresh(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
            used = store.use_refresh(form.get("refresh_token", ""))
            if used is None:
                raise _OAuthError("invalid_grant", "unknown refresh token")
            grant, status = used
            if grant.client_id != client.client_id:
                raise _OAuthError("invalid_grant", "the refresh token was issued to another client")
            if status == "reused":
                logger.warning("a rotated refresh token was presented again: the grant is revoked",
                               extra=log_fields(user=account_hash(grant.user)))
                raise _OAuthError("invalid_grant", "the refresh token was already used; the grant is revoked")
            if status != "ok":
                raise _OAuthError("invalid_grant", f"the refresh token is {status}")
            if "resource" in form and server.check_resource(form["resource"]) != grant.resource:
                raise _OAuthError("invalid_target", "resource differs from the original grant")
            scopes = grant.scopes
            if form.get("scope"):
                asked = form["scope"].split()
                if not set(asked) <= set(grant.scopes):
                    raise _OAuthError("invalid_scope", "a refresh cannot widen the grant")
                scopes = [s for s in grant.scopes if s in asked]
            return server.tokens(Grant(family=grant.family, client_id=grant.client_id, user=grant.user, scopes=scopes,
                                       resource=grant.resource))

        @post("/register", operation_id="register", status_code=201, middleware=[rate_limit],
              request_max_body_size=MAX_REGISTRATION_BYTES)
        async def register(self, request: Request) -> Response:
            client_id = secrets.token_urlsafe(16)
            try:
                registration = json.loads(await request.body())
                # The check every MCP and REST argument passes: bounded nesting, strings UTF-8 can hold.
                check_text_fields(registration, "")
                client, metadata = client_from_registration(client_id, registration)
            except RecursionError:
                return _json_error("invalid_client_metadata", f"the registration nests more than {MAX_DEPTH} levels deep")
            except InvalidInput as exc:
                return _json_error("invalid_client_metadata", str(exc))
            except ValueError:
                return _json_error("invalid_client_metadata", "the registration must be a JSON object")
            except ClientError as exc:
                return _json_error(exc.error, exc.description)
            secret = None if client.public else secrets.token_urlsafe(32)
            store.save_client(client_id, metadata, secret)
            logger.info("registered client %s (%s)", client_id, client.client_name)
            body = {"client_id": client_id, "client_id_issued_at": int(time.time()), **metadata}
            if secret:
                body |= {"client_secret": secret, "client_secret_expires_at": 0}
            return Response(body, status_code=201, headers=_NO_STORE, media_type=MediaType.JSON)

        @post("/revoke", operation_id="revoke", status_code=200, middleware=[rate_limit],
              request_max_body_size=_MAX_FORM_BYTES)
        async def revoke(self, request: Request) -> Response:
            form = {k: str(v) for k, v in (await request.form()).items()}
            try:
                client = await server.authenticated_client(request, form)
            except _OAuthError as exc:
                return _json_error(exc.error, exc.description, exc.status)
            # Revoking a refresh token revokes its grant, and with it the grant's access tokens (`sid`).
            store.revoke_refresh(form.get("token", ""), client.client_id)
            return Response(b"", status_code=200, headers=_NO_STORE)

    return [AuthorizationServerMetadata, Authorization, Tokens]
