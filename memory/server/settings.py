"""How one server runs: where it listens, what it calls itself, and what it lets in."""

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

__all__ = ["ServerSettings", "MiB", "DEFAULT_CORS_ORIGINS", "server_version", "Port", "Positive"]

MiB = 1024 * 1024
DEFAULT_CORS_ORIGINS = ("https://chatgpt.com", "https://chat.openai.com")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_LOOPBACK_NETLOCS = ("127.0.0.1", "localhost", "[::1]")
#: Constraints msgspec checks when settings come from the environment or a file (`memory.server.config`).
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


def server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memory-service")
    except PackageNotFoundError:
        return "0+unknown"


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: str = "data"
    #: postgresql://... : every person's log, and what replicas share (accounts and grants, rate
    #: limits, the embedding cache), live in this database; unset,
    #: each log is a SQLite file under data_dir. Projections are per-process caches in data_dir.
    database_url: str | None = None
    #: The signing keys (default <data_dir>/keys): one key ring for every replica, a mounted secret.
    keys_dir: str | None = None
    #: Over PostgreSQL, replicas are told of each other's appends at once (LISTEN/NOTIFY); besides,
    #: every this many seconds, a look at every log this server has open, in case a notice was lost.
    #: Without notices (SQLite workers, or while the listener reconnects): every 0.5 s.
    log_poll_seconds: Positive = 5
    host: str = "127.0.0.1"
    port: Port = 8000
    #: The URL clients reach this server at; every metadata document, token audience and fetch
    #: url is built from it. Defaults to http://HOST:PORT (http://127.0.0.1:PORT for 0.0.0.0).
    public_url: str | None = None
    #: Host headers accepted on /mcp besides the public URL's and 127.0.0.1/localhost on PORT.
    allowed_hosts: list[str] = []
    #: Origin headers accepted on /mcp besides the public URL's origin and the loopback ones.
    allowed_origins: list[str] = []
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = MiB
    #: Clock skew tolerated when checking a token's exp/nbf/iat.
    token_leeway_seconds: Annotated[int, msgspec.Meta(ge=0)] = 30
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    #: json: one JSON object a line (for a log collector); text: for a person at a terminal;
    #: auto: text when stderr is a terminal, json otherwise.
    log_format: Literal["auto", "json", "text"] = "auto"
    #: Proxy addresses whose X-Forwarded-For/-Proto headers are believed (uvicorn's
    #: forwarded_allow_ips); none by default, so a client cannot claim another address.
    forwarded_allow_ips: list[str] = []
    #: A bearer token /metrics demands; without one, /metrics answers loopback clients only.
    metrics_token: str | None = None
    #: Lifetime of the access tokens the built-in authorization server issues; the verifier
    #: refuses any of its tokens (`sid`) made to live longer.
    access_token_ttl_seconds: Positive = 900
    refresh_token_ttl_seconds: Positive = 30 * 86400
    #: The longest a personal token (`memory token`) may live: longer is refused when it is made,
    #: and by the verifier when one made before the cap (or with another cap) shows up.
    personal_token_max_ttl_seconds: Positive = 90 * 86400
    #: Browser origins allowed to call /mcp, /.well-known/*, /register and /token (CORS).
    cors_origins: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_CORS_ORIGINS))
    #: Requests per minute and client address to /register, /authorize, /token, /revoke and the login form.
    oauth_rate_limit_per_minute: Positive = 60
    #: Requests per minute and person to /mcp and /api/v1 (one assistant's burst, not a flood).
    call_rate_limit_per_minute: Positive = 3000
    #: Accept client metadata documents over plain http on loopback (tests, local development).
    allow_loopback_client_metadata: bool = False
    #: External identity provider mode: people sign in there, not at the built-in server.
    idp_issuer: str | None = None
    #: The `aud` its access tokens carry for this server (default: the resource URL).
    idp_audience: str | None = None
    idp_jwks_url: str | None = None
    #: Show memories as cards inside hosts that render MCP Apps (ChatGPT): `--no-widget` turns it off.
    widget: bool = True
    #: Server processes on one port over the one data directory (docs/deploy.md#workers).
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1

    def __post_init__(self) -> None:
        if self.database_url is not None and self.database_url.split(":", 1)[0] not in ("postgresql", "postgres"):
            raise ValueError("database_url must be a postgresql:// URL")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"public URL must be an http(s) URL, got {self.public_url!r}")
            if parts.query or parts.fragment:
                raise ValueError(f"public URL must not have a query or fragment, got {self.public_url!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"unknown log level {self.log_level!r}")
        if self.log_format not in ("auto", "json", "text"):
            raise ValueError(f"log format must be auto, json or text, got {self.log_format!r}")
        if self.idp_issuer is not None or self.idp_jwks_url is not None:
            for name, url in (("issuer", self.idp_issuer), ("JWKS URL", self.idp_jwks_url)):
                parts = urlsplit(url or "")
                if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)) \
                        or not parts.hostname:
                    raise ValueError(f"the identity provider's {name} must be an https URL, got {url!r}")
        if min(self.access_token_ttl_seconds, self.refresh_token_ttl_seconds, self.personal_token_max_ttl_seconds) <= 0:
            raise ValueError("token lifetimes must be positive")
        if self.oauth_rate_limit_per_minute <= 0 or self.call_rate_limit_per_minute <= 0:
            raise ValueError("rate limits must be positive")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be between 1 and 64, got {self.workers}")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        # Listening on every interface names no host a client could use: loopback is the one
        # that certainly reaches us (and the one `memory token` assumes).
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_urls(self) -> list[str]:
        """Every spelling of the base URL that names this very server, the base URL first. With no
        public URL and a loopback base, a local client may say 127.0.0.1, localhost or [::1] on
        PORT: one server. Never anything else: a public URL, or a non-loopback host, has one spelling."""
        if self.public_url is not None or urlsplit(self.base_url).hostname not in _LOOPBACK:
            return [self.base_url]
        return list(dict.fromkeys([self.base_url, *(f"http://{host}:{self.port}" for host in _LOOPBACK_NETLOCS)]))

    def base_url_for(self, host_header: str | None) -> str:
        """The spelling of the base URL a request came in under (its Host header), when it is one
        of `base_urls`; otherwise the base URL."""
        wanted = (host_header or "").strip().lower()
        return next((url for url in self.base_urls if urlsplit(url).netloc == wanted), self.base_url)

    @property
    def resource_url(self) -> str:
        """The protected resource (RFC 9728) and the audience of every token: the MCP endpoint."""
        return f"{self.base_url}/mcp"

    @property
    def external_idp(self) -> bool:
        return self.idp_issuer is not None

    @property
    def authorization_server(self) -> str:
        """Where clients get tokens: the external provider, or this server itself."""
        return self.idp_issuer or self.base_url

    @property
    def resource_metadata_url(self) -> str:
        return f"{self.base_url}/.well-known/oauth-protected-resource"

    def memory_url(self, memory_id: str) -> str:
        return f"{self.base_url}/memories/{memory_id}"

    def trusted_hosts(self) -> list[str]:
        """Host headers /mcp answers to: anything else is a DNS-rebinding attempt (421)."""
        public = urlsplit(self.base_url)
        hosts = [public.netloc, f"127.0.0.1:{self.port}", f"localhost:{self.port}", f"[::1]:{self.port}"]
        if public.port is None:
            # Clients may spell the default port out.
            hosts.append(f"{public.netloc}:{443 if public.scheme == 'https' else 80}")
        return list(dict.fromkeys([*hosts, *self.allowed_hosts]))

    def trusted_origins(self) -> list[str]:
        public = urlsplit(self.base_url)
        origins = [f"{public.scheme}://{public.netloc}", f"http://127.0.0.1:{self.port}",
                   f"http://localhost:{self.port}", f"http://[::1]:{self.port}"]
        # Browsers on the CORS origins (ChatGPT's web app) may call /mcp too.
        return list(dict.fromkeys([*origins, *self.allowed_origins, *self.cors_origins]))
