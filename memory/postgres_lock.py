"""A person's lock across every replica on one PostgreSQL database: a session-level advisory lock.

`UserLock` (memory/userlock.py) takes it after its thread lock, around a check-then-append (the
duplicate check of a store, the events an erasure redacts, an idempotent retry), so two replicas
storing the same text for one person at once queue there and the second sees the first's memory.

The lock belongs to a database session, so it is taken on a connection held for as long as the
lock is: from a pool of its own (`lock_pool`). The same round trip reads the log's head once the
lock is granted (a second statement in a pipeline: READ COMMITTED gives it a snapshot taken after
the first), so its holder knows at once whether another replica appended meanwhile. Its holder
then uses the log's pool for the append itself; nobody holding a log connection ever waits for a lock connection, so the two pools cannot
starve each other. The key is derived from the log's id; the lock is released with
`pg_advisory_unlock` before the connection goes back, and a connection whose unlock failed is
closed instead (its session's locks end with it), so no pooled connection ever holds a lock.
"""

import hashlib
import logging

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from memory.errors import StorageError
from memory.pgpool import error_reason

__all__ = ["AdvisoryLock", "lock_pool", "lock_key"]

logger = logging.getLogger("memory.postgres_lock")

#: How long a replica waits for another one's hold on a person before the call fails with a
#: storage error to retry: far beyond any check-then-append (an erasure of a long log included).
_LOCK_TIMEOUT_MS = 60_000
_CONNECT_TIMEOUT_SECONDS = 10


def lock_key(log_id: str) -> int:
    """A signed 64-bit advisory lock key for a log. Two logs sharing one (2^-64) would only wait
    for each other, never lose an exclusion."""
    digest = hashlib.sha256(b"memory-log-writer\0" + log_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_pool(url: str, max_size: int) -> ConnectionPool:
    """The connections locks are held on: opened as needed (a command that never locks opens none)."""
    pool = ConnectionPool(url, min_size=0, max_size=max_size, open=False, name="memory-locks",
                          kwargs={"connect_timeout": _CONNECT_TIMEOUT_SECONDS, "autocommit": True,
                                  "options": f"-c lock_timeout={_LOCK_TIMEOUT_MS}"})
    pool.open(wait=False)
    return pool


class AdvisoryLock:
    """`CrossLock` for one log. Not re-entrant: `UserLock` takes it once per outermost hold."""

    def __init__(self, pool: ConnectionPool, log_id: str):
        self._pool = pool
        self._log_id = log_id
        self._key = lock_key(log_id)
        self._held: psycopg.Connection | None = None

    def acquire(self) -> int:
        try:
            conn = self._pool.getconn(timeout=_CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout as exc:
            raise StorageError(f"the database cannot be used right now ({exc}); retry") from exc
        try:
            with conn.pipeline():
                conn.execute("SELECT pg_advisory_lock(%s)", (self._key,))
                head = conn.execute("SELECT coalesce(max(seq), 0) FROM events WHERE log_id = %s",
                                    (self._log_id,)).fetchone()[0]
        except psycopg.Error as exc:
            # A session-level lock outlives a failed transaction: if the lock was granted and the
            # head's read failed, only the session's end lets it go. The pool replaces the connection.
            conn.close()
            self._pool.putconn(conn)
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise StorageError(f"another server has held log {self._log_id}'s lock for "
                                   f"{_LOCK_TIMEOUT_MS // 1000} s; retry") from exc
            reason = error_reason(exc)
            raise StorageError(f"the database cannot be used right now ({reason}); retry") from exc
        self._held = conn
        return head

    def release(self) -> None:
        conn, self._held = self._held, None
        if conn is None:
            return
        try:
            released = conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,)).fetchone()[0]
            if not released:
                logger.error("the advisory lock of log %s was not held at its release", self._log_id)
        except psycopg.Error as exc:
            # The session is gone, and its locks with it; or it is not, and closing it ends them.
            logger.warning("releasing the lock of log %s failed (%s): its connection is closed", self._log_id, exc)
            conn.close()
        finally:
            self._pool.putconn(conn)

    def close(self) -> None:
        pass  # the pool belongs to the log directory
