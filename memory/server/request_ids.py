"""Request ids: every HTTP request gets one, here and nowhere else.

The client's X-Request-ID is kept when it is sane (printable, at most 128 characters); otherwise
the server makes one (a UUIDv7). The middleware sets it before anything else runs and echoes it
in the response's headers. The MCP tools, the REST handlers and the web pages read it with
`request_id_of` and record it in the events they append; the request and tool-call log lines
carry it too, so one id ties a client's call to its log line and to its event.
"""

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from memory.ids import new_uuid7

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "request_id_of"]

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode()
_SCOPE_KEY = "memory.request_id"
_MAX_LENGTH = 128


def request_id_of(scope: Scope) -> str | None:
    """The id `RequestIdMiddleware` gave this request (None only outside the app's middleware)."""
    request_id = scope.get(_SCOPE_KEY)  # type: ignore[call-overload]
    return request_id if isinstance(request_id, str) else None


def _given(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == _HEADER:
            given = value.decode("latin-1")
            return given if 0 < len(given) <= _MAX_LENGTH and given.isprintable() else None
    return None


class RequestIdMiddleware:
    """The outermost middleware: gives the request its id and puts it in the response headers."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _given(scope) or new_uuid7()
        scope[_SCOPE_KEY] = request_id  # type: ignore[literal-required]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (_HEADER, request_id.encode())]
            await send(message)

        await self.app(scope, receive, sending)
