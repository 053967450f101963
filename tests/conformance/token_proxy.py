"""A reverse proxy that signs every request in: the conformance suite cannot send a bearer token,
and the server has (deliberately) no switch that turns authentication off.

It forwards everything else untouched — other Host and Origin headers included, so the suite's
DNS-rebinding probes still reach the server's own checks — and streams responses (SSE) back.
"""

import threading
import time
from typing import Any

import anyio
import httpx2
import uvicorn

from memory.server.process import free_port

_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
               b"proxy-authorization", b"proxy-authenticate", b"content-length"}


class TokenProxy:
    def __init__(self, upstream: str, token: str, host: str = "127.0.0.1"):
        self.upstream = upstream.rstrip("/")
        self._upstream_host = self.upstream.split("://", 1)[1].encode()
        self._token = token
        self.host = host
        self.port = free_port(host)
        self._client: httpx2.AsyncClient | None = None
        self._server = uvicorn.Server(uvicorn.Config(self, host=host, port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="token-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "TokenProxy":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the token proxy did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self._client is None:
            # Created on the proxy's own event loop, on first use.
            self._client = httpx2.AsyncClient(timeout=httpx2.Timeout(60.0, read=None))
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        # The proxy stands in for the server: its own host and origin become the server's.
        proxy_host = f"{self.host}:{self.port}".encode()
        headers = []
        for name, value in scope["headers"]:
            if name in _HOP_BY_HOP or name == b"authorization":
                continue
            if name == b"host" and value == proxy_host:
                value = self._upstream_host
            if name == b"origin" and value == b"http://" + proxy_host:
                value = b"http://" + self._upstream_host
            headers.append((name, value))
        headers.append((b"authorization", f"Bearer {self._token}".encode()))
        target = self.upstream + scope["raw_path"].decode() + (
            "?" + scope["query_string"].decode() if scope["query_string"] else "")
        request = self._client.build_request(scope["method"], target, headers=headers, content=bytes(body))
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            await send({"type": "http.response.start", "status": 502, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": f"upstream: {exc}".encode()})
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]})
            async with anyio.create_task_group() as streams:
                # A client that hangs up on an SSE stream must not leave us reading the server's forever.
                streams.start_soon(_cancel_on_disconnect, receive, streams.cancel_scope)
                try:
                    async for chunk in response.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except httpx2.HTTPError:
                    pass  # the server ended a stream (an SSE stream at shutdown): end ours too
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                streams.cancel_scope.cancel()
        finally:
            await response.aclose()


async def _cancel_on_disconnect(receive: Any, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
