"""Who may ask for a code and where it may go: registered clients (RFC 7591) and clients whose
client_id is the https URL of their metadata document (Client ID Metadata Documents).

Redirect URIs follow the strict grammar of `uris` (one validator wherever a redirect URI is checked
or compared): https, or http on a loopback host (RFC 8252 §7.3), matched exactly at /authorize,
except that a loopback redirect's port may differ from the registered one.

Everything a registration stores is bounded (`_MAX_*`): anyone may register, so a registration
must not be a way to fill the disk.
"""

import ipaddress
import json
import logging
import socket
import time
from typing import Any

import anyio
import httpx2
import msgspec

from memory.errors import InvalidInput
from memory.server.auth import ALL_SCOPES
from memory.server.oauth.uris import MAX_URL_LENGTH, StrictURL, parse_strict_url
from memory.validation import check_text_fields

__all__ = ["Client", "ClientError", "redirect_uri_problem", "redirect_matches", "client_from_registration",
           "MetadataDocuments", "is_metadata_url", "known_scopes", "refused_address", "MAX_REGISTRATION_BYTES"]

logger = logging.getLogger("memory.server.oauth")

_MAX_DOCUMENT = 64 * 1024
#: One deadline for a whole metadata document fetch: resolving, connecting, every read.
_FETCH_DEADLINE = 5.0
_CACHE_SECONDS = 300.0
#: A failed fetch is remembered this long, so that /authorize cannot be made to fetch it again and again.
_FAILURE_CACHE_SECONDS = 60.0
_CACHE_ENTRIES = 1000
_AUTH_METHODS = ("none", "client_secret_post", "client_secret_basic")
#: The bounds of a registration: what one unauthenticated request may make the server store.
MAX_REGISTRATION_BYTES = 16 * 1024
_MAX_REDIRECT_URIS = 10
_MAX_NAME = 200
_MAX_SCOPE = 200
_MAX_LIST = 10
_MAX_LIST_ITEM = 100
_UNUSABLE_DOCUMENT = "its client metadata document could not be used (the server log says why)"


class ClientError(Exception):
    """The client or its metadata is unacceptable; `error` is the OAuth error code."""

    def __init__(self, error: str, description: str):
        self.error = error
        self.description = description
        super().__init__(description)


class Client(msgspec.Struct, frozen=True, kw_only=True):
    client_id: str
    client_name: str
    redirect_uris: list[str]
    token_endpoint_auth_method: str = "none"
    secret_hash: str | None = None
    #: The scopes the client registered, or None when it named none (then it may ask for any).
    scopes: list[str] | None = None
    #: A metadata document client; its redirect URIs are published on the host named by client_id.
    document: bool = False

    @property
    def public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


def _redirect_uri(uri: Any) -> StrictURL:
    parsed = parse_strict_url(uri)
    if parsed.scheme == "http" and not parsed.loopback:
        raise ValueError(f"{uri!r} must be https (http only on 127.0.0.1, [::1] or localhost)")
    return parsed


def redirect_uri_problem(uri: Any) -> str | None:
    """Why `uri` cannot be a redirect URI, or None when it can."""
    try:
        _redirect_uri(uri)
    except ValueError as exc:
        return str(exc)
    return None


def redirect_matches(requested: str, registered: list[str]) -> bool:
    """Whether `requested` is one of the `registered` redirect URIs: the same string, or for a
    loopback redirect the same string but for the port (RFC 8252 §7.3: native apps listen on
    whatever port is free). Both sides must pass the strict grammar, so both read alike everywhere."""
    try:
        asked = _redirect_uri(requested)
    except ValueError:
        return False
    valid = [uri for uri in registered if redirect_uri_problem(uri) is None]
    if requested in valid:
        return True
    if not (asked.scheme == "http" and asked.loopback):
        return False
    return any(_redirect_uri(uri).without_port() == asked.without_port() for uri in valid)


def _redirect_uris(metadata: dict[str, Any]) -> list[str]:
    uris = metadata.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise ClientError("invalid_redirect_uri", "redirect_uris must be a non-empty list")
    if len(uris) > _MAX_REDIRECT_URIS:
        raise ClientError("invalid_redirect_uri", f"at most {_MAX_REDIRECT_URIS} redirect_uris")
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem:
            raise ClientError("invalid_redirect_uri", problem)
    return list(uris)


def _name(metadata: dict[str, Any], fallback: str) -> str:
    name = metadata.get("client_name")
    if isinstance(name, str) and len(name) > _MAX_NAME:
        raise ClientError("invalid_client_metadata", f"client_name may be at most {_MAX_NAME} characters")
    return name.strip()[:100] if isinstance(name, str) and name.strip() else fallback


def known_scopes(scope: str) -> list[str]:
    """This server's scopes among those `scope` names, in their canonical order."""
    asked = scope.split()
    return [s for s in ALL_SCOPES if s in asked]


def _registered_scopes(metadata: dict[str, Any]) -> list[str] | None:
    scope = metadata.get("scope")
    if scope is None or (isinstance(scope, str) and not scope.strip()):
        return None
    if not isinstance(scope, str) or len(scope) > _MAX_SCOPE:
        raise ClientError("invalid_client_metadata", f"scope must be a string of at most {_MAX_SCOPE} characters")
    # Scopes of other servers (openid, offline_access) are dropped; a scope naming none of ours is a mistake.
    scopes = known_scopes(scope)
    if not scopes:
        raise ClientError("invalid_client_metadata", f"scope must name some of {' '.join(ALL_SCOPES)}")
    return scopes


def _string_list(metadata: dict[str, Any], key: str, default: list[str]) -> list[str]:
    value = metadata.get(key, default)
    if not (isinstance(value, list) and len(value) <= _MAX_LIST and
            all(isinstance(v, str) and len(v) <= _MAX_LIST_ITEM for v in value)):
        raise ClientError("invalid_client_metadata", f"{key} must be a list of at most {_MAX_LIST} short strings")
    return value


def client_from_registration(client_id: str, metadata: dict[str, Any]) -> tuple[Client, dict[str, Any]]:
    """A client from an RFC 7591 registration request, and the metadata to store and echo back."""
    if not isinstance(metadata, dict):
        raise ClientError("invalid_client_metadata", "the registration must be a JSON object")
    uris = _redirect_uris(metadata)
    # RFC 7591 §2: a client that names no method authenticates with a secret (HTTP Basic).
    method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in _AUTH_METHODS:
        raise ClientError("invalid_client_metadata", f"token_endpoint_auth_method must be one of {_AUTH_METHODS}")
    # RFC 7591 §3.2.1: the server may register less than was asked for and says so in its reply,
    # which is kinder to clients that list every grant they know than refusing them outright.
    grants = _string_list(metadata, "grant_types", ["authorization_code"])
    if "authorization_code" not in grants:
        raise ClientError("invalid_client_metadata", "grant_types must include authorization_code")
    grants = [g for g in ("authorization_code", "refresh_token") if g in grants]
    if "code" not in _string_list(metadata, "response_types", ["code"]):
        raise ClientError("invalid_client_metadata", "response_types must include code")
    scopes = _registered_scopes(metadata)
    name = _name(metadata, "an unnamed client")
    stored = {"client_name": name, "redirect_uris": uris, "token_endpoint_auth_method": method,
              "grant_types": grants, "response_types": ["code"]}
    if scopes:
        stored["scope"] = " ".join(scopes)
    for key in ("client_uri", "logo_uri"):
        value = metadata.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
            raise ClientError("invalid_client_metadata", f"{key} must be a URL of at most {MAX_URL_LENGTH} characters")
        # Never shown, only echoed: kept when it is a plain https URL, dropped otherwise (§3.2.1 again).
        try:
            parse_strict_url(value, schemes=("https",))
            stored[key] = value
        except ValueError:
            pass
    client = Client(client_id=client_id, client_name=name, redirect_uris=uris, token_endpoint_auth_method=method,
                    scopes=scopes)
    return client, stored


def is_metadata_url(client_id: str, *, allow_loopback_http: bool) -> bool:
    """Whether `client_id` names a metadata document: an https URL with a path (strict grammar)."""
    try:
        parts = parse_strict_url(client_id)
    except ValueError:
        return False
    if parts.path in ("", "/"):
        return False
    return parts.scheme == "https" or (allow_loopback_http and parts.loopback)


def _embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (mapped, 6to4, Teredo, NAT64): each must be public too."""
    if address.version == 4:
        return []
    embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in ipaddress.IPv6Network("64:ff9b::/96"):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in embedded if a is not None]


def refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether this server must not connect to `address` on behalf of a client_id: anything not
    globally routable (private, loopback, link-local, shared 100.64/10, reserved, ...) or multicast."""
    return any(not a.is_global or a.is_multicast for a in (address, *_embedded_ipv4(address)))


class MetadataDocuments:
    """Fetches and caches Client ID Metadata Documents: within one deadline, at most `_MAX_DOCUMENT`
    bytes, no redirects, and only from public addresses (a client_id must not make this server probe
    its own network), unless loopback http is allowed, which is for tests and local development.

    The host is resolved once; the connection goes to the very address that was checked (the URL
    names the IP, the Host header and TLS server name the host), so a second DNS answer cannot
    point the request somewhere else. Failures are cached too, for a shorter while. The person
    sees a generic error; the reason goes to the server log.
    """

    def __init__(self, *, allow_loopback_http: bool = False):
        self._allow_loopback_http = allow_loopback_http
        self._cache: dict[str, tuple[float, Client | ClientError]] = {}

    async def client(self, url: str) -> Client:
        cached = self._cache.get(url)
        if cached is None or cached[0] <= time.monotonic():
            try:
                outcome: Client | ClientError = await self._fetch(url)
                ttl = _CACHE_SECONDS
            except ClientError as exc:
                logger.warning("client metadata document %s refused: %s", url[:200], exc.description)
                outcome, ttl = ClientError("invalid_client", _UNUSABLE_DOCUMENT), _FAILURE_CACHE_SECONDS
            self._remember(url, time.monotonic() + ttl, outcome)
            cached = self._cache[url]
        if isinstance(cached[1], ClientError):
            raise cached[1]
        return cached[1]

    def _remember(self, url: str, until: float, outcome: Client | ClientError) -> None:
        self._cache.pop(url, None)
        if len(self._cache) >= _CACHE_ENTRIES:
            now = time.monotonic()
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= _CACHE_ENTRIES:
                del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[url] = (until, outcome)

    async def _fetch(self, url: str) -> Client:
        try:
            parsed = parse_strict_url(url)
        except ValueError as exc:
            raise ClientError("invalid_client", str(exc)) from None
        try:
            with anyio.fail_after(_FETCH_DEADLINE):
                body = await self._download(parsed)
        except TimeoutError:
            raise ClientError("invalid_client", f"no complete answer within {_FETCH_DEADLINE:g} s") from None
        except (httpx2.HTTPError, OSError) as exc:
            raise ClientError("invalid_client", f"the document could not be fetched: {exc!r}") from None
        try:
            metadata = json.loads(body)
            check_text_fields(metadata, "")
        except (ValueError, RecursionError):
            raise ClientError("invalid_client", "the document is not JSON") from None
        except InvalidInput as exc:
            raise ClientError("invalid_client", f"the document is unreadable: {exc}") from None
        if not isinstance(metadata, dict) or metadata.get("client_id") != url:
            raise ClientError("invalid_client", "the document must name its own URL as client_id")
        method = metadata.get("token_endpoint_auth_method", "none")
        if method != "none":
            # A metadata document is public: it cannot carry a shared secret.
            raise ClientError("invalid_client", "a metadata document client must use token_endpoint_auth_method none")
        uris = _redirect_uris(metadata)
        return Client(client_id=url, client_name=_name(metadata, parsed.host), redirect_uris=uris,
                      scopes=_registered_scopes(metadata), document=True)

    async def _download(self, parsed: StrictURL) -> bytes:
        host = parsed.host.strip("[]")
        infos = await anyio.getaddrinfo(host, parsed.effective_port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise ClientError("invalid_client", f"{host} has no address")
        if not (self._allow_loopback_http and parsed.loopback):
            refused = [str(a) for a in addresses if refused_address(a)]
            if refused:
                raise ClientError("invalid_client", f"{host} resolves to {', '.join(refused)}, not a public address")
        authority = parsed.host + (f":{parsed.port}" if parsed.port else "")
        query = "" if parsed.query is None else f"?{parsed.query}"
        error: Exception | None = None
        async with httpx2.AsyncClient(follow_redirects=False, trust_env=False, timeout=_FETCH_DEADLINE) as http:
            for address in addresses:
                literal = f"[{address}]" if address.version == 6 else str(address)
                target = f"{parsed.scheme}://{literal}:{parsed.effective_port}{parsed.path or '/'}{query}"
                try:
                    return await self._read(http, target, authority, host)
                except httpx2.ConnectError as exc:
                    error = exc  # the next address of the same, checked, host
        raise ClientError("invalid_client", f"no address of {host} accepted a connection: {error!r}")

    @staticmethod
    async def _read(http: httpx2.AsyncClient, target: str, authority: str, server_name: str) -> bytes:
        async with http.stream("GET", target, headers={"Accept": "application/json", "Host": authority},
                               extensions={"sni_hostname": server_name}) as response:
            if response.status_code != 200:
                # A redirect included: the document is where the client_id says, or nowhere.
                raise ClientError("invalid_client", f"the document answered HTTP {response.status_code}")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_DOCUMENT:
                    raise ClientError("invalid_client", "the document is larger than 64 KiB")
            return body
