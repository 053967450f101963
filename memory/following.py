"""Keeping this process's projections of every open log up with what other processes append.

Worker processes on one SQLite data directory, and replicas over one PostgreSQL database, append
to the same logs. Before every call a process looks at that person's head (`UserStore.follow`,
read your writes); this module carries the rest, above all an erasure made elsewhere, into this
process's files (`UserStore.erase_leftovers`) without waiting for that person's next call here.

When the log directory can tell of appends as they commit (`LogDirectory.watch`: PostgreSQL's
LISTEN/NOTIFY), a notice wakes the follower at once, and it follows only the log named. Every
`poll_seconds` it also looks at every open log, in case a notice was lost. Without a watch
(SQLite), or while the watch reconnects, it looks at every open log every `FALLBACK_POLL_SECONDS`.
"""

import logging
import threading
import time
from collections.abc import Callable

from memory.logs import LogDirectory
from memory.userstore import UserDirectory, UserStore

__all__ = ["LogFollower", "FALLBACK_POLL_SECONDS"]

logger = logging.getLogger("memory.following")

#: The poll without a change feed (SQLite workers), and with one while it is down.
FALLBACK_POLL_SECONDS = 0.5


class LogFollower:
    """One daemon thread applies what others appended; `follow(store)` is the service's own step
    (it also empties the person's query-vector cache after an erasure)."""

    def __init__(self, users: UserDirectory, logs: LogDirectory, follow: Callable[[UserStore], None],
                 poll_seconds: float):
        self._users = users
        self._follow = follow
        self._poll_seconds = poll_seconds
        self._guard = threading.Lock()
        # log id -> the highest head seq a notice named since the last round
        self._told: dict[str, int] = {}
        self._missed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watch = logs.watch(self._changed)
        self._thread = threading.Thread(target=self._run, name="follow-logs", daemon=True)
        self._thread.start()

    @property
    def listening(self) -> bool:
        """Whether appends elsewhere are being told right now (else only the fallback poll runs)."""
        return self._watch is not None and self._watch.listening

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _changed(self, log_id: str | None, seq: int) -> None:
        with self._guard:
            if log_id is None:
                self._missed = True
            else:
                self._told[log_id] = max(seq, self._told.get(log_id, 0))
        self._wake.set()

    def _run(self) -> None:
        last_round = time.monotonic()
        while True:
            self._wake.wait(FALLBACK_POLL_SECONDS)
            # Cleared before the notices are taken: one arriving now wakes the next turn.
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._guard:
                told, self._told = self._told, {}
                missed, self._missed = self._missed, False
            every = self._poll_seconds if self.listening else FALLBACK_POLL_SECONDS
            if missed or time.monotonic() - last_round >= every:
                last_round = time.monotonic()
                stores = self._users.open_stores()
            else:
                # Only logs open here, and only if their notice is news: a call may have followed already.
                stores = [store for key, seq in told.items()
                          if (store := self._users.opened(key)) is not None and seq > store.applied_seq]
            for store in stores:
                self._step(store, self._follow)
            # Cheap when nothing was erased; retried every turn when a reader was in the way.
            for store in self._users.open_stores():
                self._step(store, UserStore.erase_leftovers)

    @staticmethod
    def _step(store: UserStore, step: Callable[[UserStore], object]) -> None:
        try:
            step(store)
        except Exception:  # noqa: BLE001 - logged; the next round tries again
            logger.exception("following the log of %s failed", store.owner.key[:12])
