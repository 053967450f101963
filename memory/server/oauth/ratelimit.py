"""Litestar's rate limiter answering 429 with a Retry-After header: keyed by client address for
the OAuth endpoints (nobody is signed in yet), by principal for tool and API calls (a client
address says little behind a proxy or for ChatGPT, whose calls all come from its servers).

One process keeps its windows in memory (Litestar's store). Several workers on one data
directory (`shared`) count in one SQLite file instead, each request one atomic increment of its
key's window, so the limit holds across them rather than N times over."""

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio.to_thread

from litestar import Request
from litestar.middleware import DefineMiddleware
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.stores.base import Store
from litestar.types import Message, Send

__all__ = ["oauth_rate_limit", "principal_rate_limit", "SharedWindows"]


class _RetryAfterRateLimit(RateLimitMiddleware):
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


class SharedWindows:
    """Fixed windows counted in a SQLite file every worker opens: `hit` adds one request to a
    key's window and says how many it holds, in one statement (so in one transaction)."""

    _PRUNE_EVERY = 1000  # hits between deletions of windows that have ended

    def __init__(self, path: str | Path):
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # a lost window after a power cut only forgives a burst
        self._db.execute("CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, reset INTEGER NOT NULL, "
                         "count INTEGER NOT NULL)")
        self._lock = threading.Lock()
        self._hits = 0

    def hit(self, key: str, seconds: int) -> tuple[int, int]:
        """(requests in the window so far, this one included; the time the window ends)."""
        now = int(time.time())
        with self._lock:
            count, reset = self._db.execute(
                "INSERT INTO windows VALUES (?, ?, 1) ON CONFLICT (key) DO UPDATE SET "
                "count = CASE WHEN reset <= ? THEN 1 ELSE count + 1 END, "
                "reset = CASE WHEN reset <= ? THEN excluded.reset ELSE reset END RETURNING count, reset",
                (key, now + seconds, now, now)).fetchone()
            self._hits += 1
            if self._hits % self._PRUNE_EVERY == 0:
                self._db.execute("DELETE FROM windows WHERE reset <= ?", (now,))
        return count, reset


class _SharedRateLimit(_RetryAfterRateLimit):
    """Litestar's limiter with its window read and advanced in one step of `SharedWindows`."""

    windows: SharedWindows

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        count, reset = await anyio.to_thread.run_sync(
            self.windows.hit, f"{self.config.store}::{key}", DURATION_VALUES[self.unit])
        # The requests before this one (bounded: past the limit only "over" matters).
        return CacheObject(history=[reset] * min(count - 1, self.max_requests), reset=reset)

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:
        # Counted already by `hit`: only the headers need this request in the history.
        cache_object.history = [int(time.time()), *cache_object.history]


def _middleware(windows: SharedWindows | None) -> type[_RetryAfterRateLimit]:
    if windows is None:
        return _RetryAfterRateLimit
    return type("_SharedRateLimit", (_SharedRateLimit,), {"windows": windows})


def oauth_rate_limit(per_minute: int, shared: SharedWindows | None = None) -> DefineMiddleware:
    return RateLimitConfig(rate_limit=("minute", per_minute), middleware_class=_middleware(shared),
                           store="oauth_rate_limit").middleware


def _principal_key(request: Request[Any, Any, Any]) -> str:
    from memory.server.auth import PRINCIPAL_SCOPE_KEY

    return request.scope[PRINCIPAL_SCOPE_KEY].identity.key  # type: ignore[typeddict-item]


def principal_rate_limit(per_minute: int, shared: SharedWindows | None = None) -> DefineMiddleware:
    """Goes after the bearer middleware, which puts the principal in the scope."""
    return RateLimitConfig(rate_limit=("minute", per_minute), middleware_class=_middleware(shared),
                           store="call_rate_limit", identifier_for_request=_principal_key).middleware
