"""How one server runs: where it listens, what it calls itself, and what it lets in."""

from urllib.parse import urlsplit

import msgspec

__all__ = ["ServerSettings", "MiB", "server_version"]

MiB = 1024 * 1024
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memory-service")
    except PackageNotFoundError:
        return "0+unknown"


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    #: The URL clients reach this server at; every metadata document, token audience and fetch
    #: url is built from it. Defaults to http://HOST:PORT (http://127.0.0.1:PORT for 0.0.0.0).
    public_url: str | None = None
    #: Host headers accepted on /mcp besides the public URL's and 127.0.0.1/localhost on PORT.
    allowed_hosts: list[str] = []
    #: Origin headers accepted on /mcp besides the public URL's origin and the loopback ones.
    allowed_origins: list[str] = []
    max_body_bytes: int = MiB
    #: Clock skew tolerated when checking a token's exp/nbf/iat.
    token_leeway_seconds: int = 30
    log_level: str = "info"

    def __post_init__(self) -> None:
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
    def resource_url(self) -> str:
        """The protected resource (RFC 9728) and the audience of every token: the MCP endpoint."""
        return f"{self.base_url}/mcp"

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
        return list(dict.fromkeys([*origins, *self.allowed_origins]))
