"""A Litestar `Store` in PostgreSQL, so every replica of a `--database-url` deployment reads and
writes the same entries, and the one thing the rate limiter needs beyond a Store: `hit`, which
counts a request in a fixed window with one atomic upsert.

Litestar's rate limiter reads a key's history, checks it and writes it back: two replicas doing
that at once would each miss the other's request. `hit` has no such gap, and the rate limiter
(memory/server/oauth/ratelimit.py) uses it whenever its store offers it.
"""

import time
from datetime import timedelta
from typing import Any

import anyio.to_thread
from litestar.stores.base import Store

from memory.pgpool import create_schema

__all__ = ["PostgresStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv_store (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value BYTEA NOT NULL, expires_at DOUBLE PRECISION,
    PRIMARY KEY (namespace, key));
CREATE TABLE IF NOT EXISTS rate_limit_windows (
    namespace TEXT NOT NULL, key TEXT NOT NULL, hits BIGINT NOT NULL, reset_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, key));
"""
# Windows and entries that are over are deleted every this many hits of a process: the tables stay
# as small as the number of callers active in the last window, without a timer.
_SWEEP_EVERY = 1000

_HIT = """
INSERT INTO rate_limit_windows VALUES (%(ns)s, %(key)s, 1, %(reset)s)
ON CONFLICT (namespace, key) DO UPDATE SET
    hits = CASE WHEN rate_limit_windows.reset_at <= %(now)s THEN 1 ELSE rate_limit_windows.hits + 1 END,
    reset_at = CASE WHEN rate_limit_windows.reset_at <= %(now)s THEN %(reset)s ELSE rate_limit_windows.reset_at END
RETURNING hits, reset_at
"""


def _seconds(expires_in: int | timedelta | None) -> float | None:
    if expires_in is None:
        return None
    return expires_in.total_seconds() if isinstance(expires_in, timedelta) else float(expires_in)


class PostgresStore(Store):
    """Entries of one `namespace` (one store name of the app) in a table every replica shares."""

    def __init__(self, pool: Any, namespace: str):
        self._pool = pool
        self.namespace = namespace
        self._hits = 0
        create_schema(pool, "memory.kv_store", _SCHEMA)

    def _rows(self, sql: str, args: tuple | dict) -> list[tuple]:
        with self._pool.connection() as conn:
            # A count or an entry lost to a crash of the database is harmless here; waiting for the
            # WAL to reach the disk on every request is not (it was most of a hit's time).
            conn.execute("SET LOCAL synchronous_commit = off")
            cursor = conn.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    async def _run(self, sql: str, args: tuple | dict) -> list[tuple]:
        # psycopg's pool is synchronous: its short transactions run in a worker thread.
        return await anyio.to_thread.run_sync(self._rows, sql, args)

    async def hit(self, key: str, window_seconds: int) -> tuple[int, int]:
        """Count one request against `key`: (requests in the current window, this one included;
        the epoch second the window ends). A window that is over starts again at one."""
        now = int(time.time())
        self._hits += 1
        if self._hits % _SWEEP_EVERY == 0:
            await self._run("DELETE FROM rate_limit_windows WHERE reset_at <= %s", (now,))
            await self._run("DELETE FROM kv_store WHERE expires_at <= %s", (time.time(),))
        rows = await self._run(_HIT, {"ns": self.namespace, "key": key, "now": now, "reset": now + window_seconds})
        return int(rows[0][0]), int(rows[0][1])

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        seconds = _seconds(expires_in)
        await self._run(
            "INSERT INTO kv_store VALUES (%s, %s, %s, %s) ON CONFLICT (namespace, key) DO UPDATE "
            "SET value = excluded.value, expires_at = excluded.expires_at",
            (self.namespace, key, value.encode() if isinstance(value, str) else value,
             None if seconds is None else time.time() + seconds))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        now = time.time()
        seconds = _seconds(renew_for)
        if seconds is not None:
            # Renewing only what has an expiry, as Litestar's own stores do.
            rows = await self._run(
                "UPDATE kv_store SET expires_at = %s WHERE namespace = %s AND key = %s AND expires_at > %s "
                "RETURNING value", (now + seconds, self.namespace, key, now))
            if rows:
                return bytes(rows[0][0])
        rows = await self._run("SELECT value FROM kv_store WHERE namespace = %s AND key = %s "
                               "AND (expires_at IS NULL OR expires_at > %s)", (self.namespace, key, now))
        return bytes(rows[0][0]) if rows else None

    async def delete(self, key: str) -> None:
        await self._run("DELETE FROM kv_store WHERE namespace = %s AND key = %s", (self.namespace, key))

    async def delete_all(self) -> None:
        await self._run("DELETE FROM kv_store WHERE namespace = %s", (self.namespace,))
        await self._run("DELETE FROM rate_limit_windows WHERE namespace = %s", (self.namespace,))

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        rows = await self._run("SELECT expires_at FROM kv_store WHERE namespace = %s AND key = %s "
                               "AND (expires_at IS NULL OR expires_at > %s)", (self.namespace, key, time.time()))
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0] - time.time())
