"""One person's lock: a thread lock, and when other processes write the same log a lock across them too.

The service holds it around every check-then-append (a duplicate check, the list of events an
erasure redacts, an idempotent retry). Within one process the thread lock makes those atomic.
When other processes append to the same log, a `CrossLock` does the same across them, and
whoever takes it brings its projections up to the log's head first (`on_acquire`), so the check
sees what the others appended. The log directory chooses the cross-process lock
(`LogDirectory.writer_lock`): a `flock` on `writer.lock` beside the person's log for worker
processes on one SQLite data directory, a PostgreSQL advisory lock for replicas over one
database (memory/postgres_lock.py), none for a process alone with its files.

Order, always: the thread lock, then the cross-process one (released the other way round). A
thread holds at most one person's lock, so no two locks are ever waited for in opposite orders.
"""

import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

__all__ = ["UserLock", "CrossLock", "FileLock"]


class CrossLock(Protocol):
    """A person's lock across processes; taken and released only by `UserLock`, under its thread lock."""

    def acquire(self) -> int | None:
        """Wait for the lock; on failure raise, holding nothing. The log's head seq as of the
        grant when the lock learns it in the same breath (PostgreSQL), else None."""
        ...

    def release(self) -> None:
        """Let it go; never raises for a lock that is already lost (its holder's connection died)."""
        ...

    def close(self) -> None: ...


class FileLock:
    """`flock` on a file: every process on the machine that opens the same path queues on it."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        assert self._fd is not None, "the lock was closed"
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class UserLock:
    """Re-entrant, like the `threading.RLock` it wraps; the cross-process lock is taken by the
    outermost acquire of a thread and released by its last release."""

    def __init__(self, across: CrossLock | None = None):
        self._thread = threading.RLock()
        self._depth = 0
        self._across = across
        #: Called with what `CrossLock.acquire` returned (the log's head, or None) each time the
        #: cross-process lock is taken.
        self.on_acquire: Callable[[int | None], object] | None = None

    @property
    def local(self) -> threading.RLock:
        """The thread lock alone: for work on this process's own files (a projection catch-up),
        which needs no other process to wait. Nothing done under it alone waits for the cross-process lock."""
        return self._thread

    def acquire(self) -> None:
        self._thread.acquire()
        self._depth += 1
        if self._depth > 1 or self._across is None:
            return
        try:
            head = self._across.acquire()
        except BaseException:
            # Nothing held across processes: only the thread lock to give back.
            self._depth -= 1
            self._thread.release()
            raise
        try:
            if self.on_acquire is not None:
                self.on_acquire(head)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._across is not None:
                self._across.release()
        finally:
            self._thread.release()

    def __enter__(self) -> "UserLock":
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def close(self) -> None:
        if self._across is not None:
            self._across.close()
