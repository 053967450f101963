"""One person's lock: a thread lock, and with several worker processes a file lock as well.

The service holds it around every check-then-append (a duplicate check, the list of events an
erasure redacts, an idempotent retry). Within one process the thread lock makes those atomic;
with several processes on one data directory the file lock (`flock` on `writer.lock` beside the
person's log) does the same across them, and whoever takes it first brings its projections up to
the log's head (`on_acquire`), so the check sees what the other processes appended.
"""

import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["UserLock"]


class UserLock:
    """Re-entrant, like the `threading.RLock` it wraps; the file lock is taken by the outermost
    acquire of a thread and released by its last release."""

    def __init__(self, path: Path | None = None):
        self._thread = threading.RLock()
        self._depth = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if path is not None else None
        self.on_acquire: Callable[[], object] | None = None

    @property
    def local(self) -> threading.RLock:
        """The thread lock alone: for work on this process's own files (a projection catch-up),
        which needs no other process to wait. Nothing done under it alone waits for the file lock."""
        return self._thread

    def acquire(self) -> None:
        self._thread.acquire()
        self._depth += 1
        if self._depth > 1 or self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            if self.on_acquire is not None:
                self.on_acquire()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()

    def __enter__(self) -> "UserLock":
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
