"""The one URL grammar the authorization server accepts wherever a URL decides where something goes:
redirect URIs (at /register, in client metadata documents and at /authorize) and the https URLs
that name a client metadata document.

The server reads URLs with Python; the browser that follows a redirect reads them with the WHATWG
URL rules. The two disagree on inputs RFC 3986 does not allow: `\\` (a path separator to a
browser), userinfo, tabs and newlines (dropped by a browser), percent escapes and non-ASCII in the
host, IPv4 written as `127.1` or `0x7f.0.0.1`, uppercase and trailing dots, dot segments. So only
a strict subset of RFC 3986 is accepted, in which both read the same scheme, host, port, path and
query; everything else is refused rather than normalized.
"""

import ipaddress
import re

import msgspec

__all__ = ["StrictURL", "parse_strict_url", "MAX_URL_LENGTH", "LOOPBACK_HOSTS"]

MAX_URL_LENGTH = 2000
#: RFC 8252 §7.3: the loopback hosts a native app may listen on over plain http.
LOOPBACK_HOSTS = ("127.0.0.1", "[::1]", "localhost")

# RFC 3986 pchar, except that a percent escape may not spell an unreserved character (a browser
# may decode it, Python does not) and the query has no `'` (which a browser percent-encodes there).
_ESCAPE = r"%(?![46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[DEde]|5[Ff]|7[Ee])[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|{_ESCAPE})"
_QCHAR = rf"(?:[A-Za-z0-9\-._~!$&()*+,;=:@/?]|{_ESCAPE})"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# The last label starts with a letter: a browser reads a host ending in a number (`127.1`,
# `1.0x7f`) as an IPv4 address, in whatever base it is written.
_DNS_NAME = rf"(?:{_LABEL}\.)*[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_URL = re.compile(
    rf"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>{_DNS_NAME}|{_IPV4}|\[[0-9a-f:]+\])"
    rf"(?::(?P<port>[1-9][0-9]{{0,4}}))?(?P<path>(?:/{_PCHAR}*)*)(?:\?(?P<query>{_QCHAR}*))?")
_DOT_SEGMENT = re.compile(r"/\.\.?(?=/|$)")


class StrictURL(msgspec.Struct, frozen=True, kw_only=True):
    """A URL that Python and a browser read alike. `host` is as written (IPv6 in brackets)."""

    scheme: str
    host: str
    port: int | None
    path: str
    query: str | None

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else {"http": 80, "https": 443}[self.scheme]

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    def without_port(self) -> str:
        """The URL as written, minus its port: what RFC 8252 §7.3 compares for a loopback redirect."""
        return f"{self.scheme}://{self.host}{self.path}{'' if self.query is None else '?' + self.query}"


def parse_strict_url(url: object, *, schemes: tuple[str, ...] = ("https", "http")) -> StrictURL:
    """`url` read by the strict grammar, or ValueError saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise ValueError("a URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"a URL may be at most {MAX_URL_LENGTH} characters")
    shown = url[:200]
    if "#" in url:
        raise ValueError(f"{shown!r} has a fragment")
    match = _URL.fullmatch(url)
    if match is None:
        raise ValueError(f"{shown!r} is not a plain URL: scheme://host[:port]/path[?query] in lowercase ASCII, "
                         "without user name, backslash, spaces, control characters or escapes in the host")
    scheme, host, port, path, query = match.group("scheme", "host", "port", "path", "query")
    if scheme not in schemes:
        raise ValueError(f"{shown!r} must use {' or '.join(schemes)}")
    if len(host) > 253:
        raise ValueError(f"{shown!r} has a host name longer than 253 characters")
    if host.startswith("["):
        try:
            canonical = ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            raise ValueError(f"{shown!r} has an invalid IPv6 address") from None
        if canonical != host[1:-1]:
            raise ValueError(f"{shown!r}: write the IPv6 address as [{canonical}]")
    if port is not None and int(port) > 65535:
        raise ValueError(f"{shown!r} has a port above 65535")
    if _DOT_SEGMENT.search(path):
        raise ValueError(f"{shown!r} has a . or .. path segment")
    return StrictURL(scheme=scheme, host=host, port=int(port) if port else None, path=path, query=query)
