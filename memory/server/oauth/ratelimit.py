"""Litestar's rate limiter answering 429 with a Retry-After header: keyed by client address for
the OAuth endpoints (nobody is signed in yet), by principal for tool and API calls (a client
address says little behind a proxy or for ChatGPT, whose calls all come from its servers).

The budget lives in the app's store of that name: in memory for one server, in PostgreSQL
(`memory.server.kvstore.PostgresStore`) when replicas share a database, where a request is counted
with one atomic `hit` instead of Litestar's read-then-write, so replicas share one budget exactly."""

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio.to_thread

from litestar import Request
from litestar.middleware import DefineMiddleware
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.stores.base import Store
from litestar.exceptions import TooManyRequestsException
from litestar.types import Message, Receive, Scope, Send

from memory.wal import use_wal

__all__ = ["oauth_rate_limit", "principal_rate_limit", "WindowCounter", "SqliteWindows", "OAUTH_STORE", "CALLS_STORE"]

#: The app's store names for the two budgets (`Litestar(stores=...)` may put them elsewhere).
OAUTH_STORE = "oauth_rate_limit"
CALLS_STORE = "call_rate_limit"


@runtime_checkable
class WindowCounter(Protocol):
    async def hit(self, key: str, window_seconds: int) -> tuple[int, int]:
        """Count one request: (requests in the current window with this one, when the window ends)."""
        ...


class SqliteWindows:
    """A `WindowCounter` in a SQLite file every worker process on one data directory opens
    (`memory serve --workers N`): a request is one atomic upsert of its key's fixed window, so the
    limit holds across the workers rather than N times over."""

    _PRUNE_EVERY = 1000  # hits between deletions of windows that have ended

    def __init__(self, path: str | Path, name: str):
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        use_wal(self._db)
        self._db.execute("PRAGMA synchronous=OFF")  # a window lost to a power cut only forgives a burst
        self._db.execute("CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, reset INTEGER NOT NULL, "
                         "count INTEGER NOT NULL)")
        self._name = name
        self._lock = threading.Lock()
        self._hits = 0

    def _hit(self, key: str, seconds: int) -> tuple[int, int]:
        now = int(time.time())
        with self._lock:
            count, reset = self._db.execute(
                "INSERT INTO windows VALUES (?, ?, 1) ON CONFLICT (key) DO UPDATE SET "
                "count = CASE WHEN reset <= ? THEN 1 ELSE count + 1 END, "
                "reset = CASE WHEN reset <= ? THEN excluded.reset ELSE reset END RETURNING count, reset",
                (f"{self._name}::{key}", now + seconds, now, now)).fetchone()
            self._hits += 1
            if self._hits % self._PRUNE_EVERY == 0:
                self._db.execute("DELETE FROM windows WHERE reset <= ?", (now,))
        return count, reset

    async def hit(self, key: str, window_seconds: int) -> tuple[int, int]:
        return await anyio.to_thread.run_sync(self._hit, key, window_seconds)

    # Litestar enters every store of the app with the app's lifespan, as Litestar's own stores are.
    async def __aenter__(self) -> "SqliteWindows":
        return self

    async def __aexit__(self, *_: object) -> None:
        with self._lock:
            self._db.close()


class _RetryAfterRateLimit(RateLimitMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope["litestar_app"]
        store = self.config.get_store_from_app(app)
        if not isinstance(store, WindowCounter):
            await super().__call__(scope, receive, send)
            return
        # Litestar's own path holds a process-wide lock around its read-then-write; a `hit` is
        # atomic in the database, so requests need not queue behind each other's round trip.
        request: Request[Any, Any, Any] = app.request_class(scope)
        if await self.should_check_request(request=request):
            cache_object = await self.retrieve_cached_history(self.cache_key_from_request(request), store)
            if len(cache_object.history) >= self.max_requests:
                raise TooManyRequestsException(headers=self.create_response_headers(cache_object))
            cache_object.history.append(cache_object.reset)  # this request, for the headers
            send = self.create_send_wrapper(send, cache_object)
        await self.app(scope, receive, send)

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        if not isinstance(store, WindowCounter):
            return await super().retrieve_cached_history(key, store)
        hits, reset = await store.hit(key, DURATION_VALUES[self.unit])
        # The requests before this one, as Litestar's check counts them (capped: a flood's count can be huge).
        return CacheObject(history=[reset] * min(hits - 1, self.max_requests), reset=reset)

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        headers = super().create_response_headers(cache_object)
        # RFC 9110 §10.2.3: the one header every client knows how to wait on.
        headers["Retry-After"] = str(max(1, int(headers[self.config.rate_limit_reset_header_key])))
        return headers

    def create_send_wrapper(self, send: Send, cache_object: CacheObject) -> Send:
        # A request let through gets the RateLimit-* headers but never Retry-After: a client that
        # honours it would wait after every answer. (Litestar uses one header builder for both.)
        headers = super().create_response_headers(cache_object)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                mutable = MutableScopeHeaders(message)
                for key, value in headers.items():
                    mutable[key] = value
            await send(message)

        return send_with_headers


def oauth_rate_limit(per_minute: int) -> DefineMiddleware:
    return RateLimitConfig(rate_limit=("minute", per_minute), middleware_class=_RetryAfterRateLimit,
                           store=OAUTH_STORE).middleware


def _principal_key(request: Request[Any, Any, Any]) -> str:
    from memory.server.auth import PRINCIPAL_SCOPE_KEY

    return request.scope[PRINCIPAL_SCOPE_KEY].identity.key  # type: ignore[typeddict-item]


def principal_rate_limit(per_minute: int) -> DefineMiddleware:
    """Goes after the bearer middleware, which puts the principal in the scope."""
    return RateLimitConfig(rate_limit=("minute", per_minute), middleware_class=_RetryAfterRateLimit,
                           store=CALLS_STORE, identifier_for_request=_principal_key).middleware
