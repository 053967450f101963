"""Who may ask for a code and where it may go: registered clients (RFC 7591) and clients whose
client_id is the https URL of their metadata document (Client ID Metadata Documents).

Redirect URIs are https, or http on a loopback host (RFC 8252 §7.3), and are matched exactly at
/authorize, except that a loopback redirect's port may differ from the registered one.
"""

import ipaddress
import json
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx2
import msgspec

__all__ = ["Client", "ClientError", "redirect_uri_problem", "redirect_matches", "client_from_registration",
           "MetadataDocuments", "is_metadata_url"]

_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_MAX_DOCUMENT = 64 * 1024
_FETCH_TIMEOUT = 5.0
_CACHE_SECONDS = 300.0
_AUTH_METHODS = ("none", "client_secret_post", "client_secret_basic")


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

    @property
    def public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


def _is_loopback(host: str | None) -> bool:
    return host is not None and host.lower() in _LOOPBACK_HOSTS


def redirect_uri_problem(uri: Any) -> str | None:
    """Why `uri` cannot be a redirect URI, or None when it can."""
    if not isinstance(uri, str) or not uri:
        return "a redirect URI must be a non-empty string"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return f"{uri!r} is not a URL"
    if parts.fragment or "#" in uri:
        return f"{uri!r} has a fragment"
    if not parts.hostname:
        return f"{uri!r} has no host"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return None
    return f"{uri!r} must be https (http only on 127.0.0.1, [::1] or localhost)"


def redirect_matches(requested: str, registered: list[str]) -> bool:
    if requested in registered:
        return True
    asked = urlsplit(requested)
    if asked.scheme != "http" or not _is_loopback(asked.hostname):
        return False
    # RFC 8252 §7.3: native apps listen on whatever port is free; everything else must match.
    for uri in registered:
        known = urlsplit(uri)
        if (known.scheme, known.hostname, known.path, known.query) == (asked.scheme, asked.hostname, asked.path,
                                                                     asked.query):
            return True
    return False


def _redirect_uris(metadata: dict[str, Any]) -> list[str]:
    uris = metadata.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise ClientError("invalid_redirect_uri", "redirect_uris must be a non-empty list")
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem:
            raise ClientError("invalid_redirect_uri", problem)
    return list(uris)


def _name(metadata: dict[str, Any], fallback: str) -> str:
    name = metadata.get("client_name")
    return name.strip()[:100] if isinstance(name, str) and name.strip() else fallback


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
    grants = metadata.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or "authorization_code" not in grants:
        raise ClientError("invalid_client_metadata", "grant_types must include authorization_code")
    grants = [g for g in ("authorization_code", "refresh_token") if g in grants]
    responses = metadata.get("response_types", ["code"])
    if not isinstance(responses, list) or "code" not in responses:
        raise ClientError("invalid_client_metadata", "response_types must include code")
    scope = metadata.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise ClientError("invalid_client_metadata", "scope must be a string")
    name = _name(metadata, "an unnamed client")
    stored = {"client_name": name, "redirect_uris": uris, "token_endpoint_auth_method": method,
              "grant_types": grants, "response_types": ["code"]}
    if scope:
        stored["scope"] = scope
    for key in ("client_uri", "logo_uri"):
        if isinstance(metadata.get(key), str):
            stored[key] = metadata[key]
    return Client(client_id=client_id, client_name=name, redirect_uris=uris, token_endpoint_auth_method=method), \
        stored


def is_metadata_url(client_id: str, *, allow_loopback_http: bool) -> bool:
    parts = urlsplit(client_id)
    if parts.path in ("", "/") or not parts.hostname:
        return False
    return parts.scheme == "https" or (allow_loopback_http and parts.scheme == "http" and
                                       _is_loopback(parts.hostname))


def _private_address(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            return True
    return False


class MetadataDocuments:
    """Fetches and caches Client ID Metadata Documents, in a thread, with a timeout and a size limit.

    Only public hosts are fetched (a client_id must not make this server probe its own network),
    unless loopback http is allowed, which is for tests and local development.
    """

    def __init__(self, *, allow_loopback_http: bool = False):
        self._allow_loopback_http = allow_loopback_http
        self._cache: dict[str, tuple[float, Client]] = {}
        self._lock = threading.Lock()

    async def client(self, url: str) -> Client:
        with self._lock:
            cached = self._cache.get(url)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        client = await anyio.to_thread.run_sync(self._fetch, url)
        with self._lock:
            self._cache[url] = (time.monotonic() + _CACHE_SECONDS, client)
        return client

    def _fetch(self, url: str) -> Client:
        host = urlsplit(url).hostname or ""
        loopback_ok = self._allow_loopback_http and _is_loopback(host)
        if not loopback_ok and _private_address(host):
            raise ClientError("invalid_client", "the client metadata document's host is not a public address")
        try:
            with httpx2.Client(timeout=_FETCH_TIMEOUT, follow_redirects=False) as http, \
                    http.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise ClientError("invalid_client",
                                      f"the client metadata document answered HTTP {response.status_code}")
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_DOCUMENT:
                        raise ClientError("invalid_client", "the client metadata document is too large")
        except httpx2.HTTPError as exc:
            raise ClientError("invalid_client", f"the client metadata document could not be fetched: {exc}") from None
        try:
            metadata = json.loads(body)
        except ValueError:
            raise ClientError("invalid_client", "the client metadata document is not JSON") from None
        if not isinstance(metadata, dict) or metadata.get("client_id") != url:
            raise ClientError("invalid_client", "the client metadata document must name its own URL as client_id")
        method = metadata.get("token_endpoint_auth_method", "none")
        if method != "none":
            # A metadata document is public: it cannot carry a shared secret.
            raise ClientError("invalid_client", "a client metadata document client must use token_endpoint_auth_method none")
        try:
            uris = _redirect_uris(metadata)
        except ClientError as exc:
            raise ClientError("invalid_client", exc.description) from None
        return Client(client_id=url, client_name=_name(metadata, host), redirect_uris=uris)
