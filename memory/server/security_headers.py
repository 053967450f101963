"""Browser-facing hardening headers on every answer the app sends, 404s and /mcp included.

A header a handler already set wins: the OAuth pages send their own stricter policy, without
`form-action`, because browsers apply it to the redirect after the consent form, which goes to
the client's host.
"""

from litestar.types import Message, Scope

__all__ = ["add_security_headers", "HTML_POLICY"]

HTML_POLICY = "default-src 'self'; frame-ancestors 'none'; form-action 'self'"

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_HTML = (
    (b"content-security-policy", HTML_POLICY.encode()),
    (b"cache-control", b"no-store"),
)


async def add_security_headers(message: Message, scope: Scope) -> None:
    """A Litestar `before_send` hook: adds what is missing to the start of each HTTP answer."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers") or [])
    present = {name.lower() for name, _ in headers}
    content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
    wanted = _ALWAYS + (_HTML if content_type.startswith(b"text/html") else ())
    headers += [(name, value) for name, value in wanted if name not in present]
    message["headers"] = headers  # type: ignore[typeddict-unknown-key]
