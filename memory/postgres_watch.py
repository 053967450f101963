"""Replicas over one PostgreSQL database are told of each other's appends: LISTEN/NOTIFY.

Every append notifies `CHANNEL` inside its own transaction (`NOTIFY_SQL`, in the append's
pipeline: no extra round trip), so PostgreSQL delivers the notice when, and only if, the append
commits. The notice names the directory that appended (`origin`, one per process), the new head
seq and the log. A `LogListener` LISTENs on a connection of its own, in a daemon thread, and
hands every notice of another origin to its callback; its own process's appends are dropped
there for the price of a string comparison (that process caught its projections up itself).

When the connection drops (a restart, a failover, `pg_terminate_backend`), the listener
reconnects with a growing pause, and once listening again tells its callback that appends may
have gone untold meanwhile (`changed(None, 0)`): the follower then looks at every open log.
"""

import logging
import threading

import psycopg

from memory.logs import LogChanged
from memory.pgpool import error_reason

__all__ = ["CHANNEL", "NOTIFY_SQL", "LogListener", "notice", "APPLICATION_NAME"]

logger = logging.getLogger("memory.postgres_watch")

CHANNEL = "memory_log"
#: Run in an append's transaction, with `notice(...)` as its parameter.
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', %s)"
#: How the listener's session shows in pg_stat_activity (operators, and the tests, find it by it).
APPLICATION_NAME = "memory-listen"

_CONNECT_TIMEOUT_SECONDS = 10
# How long one wait for notices lasts before the thread looks at whether it should stop.
_WAKE_SECONDS = 0.5
_FIRST_PAUSE_SECONDS = 0.1
_LONGEST_PAUSE_SECONDS = 5.0
# A connection that silently vanished (no FIN: a network partition) is noticed within about a
# minute by TCP keepalives; meanwhile the poll still runs, every `poll_seconds`.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def notice(origin: str, seq: int, log_id: str) -> str:
    """The payload of an append's notice: the log last, as it is the one part that could hold a space."""
    return f"{origin} {seq} {log_id}"


class LogListener:
    """`LogWatch` over LISTEN: one dedicated autocommit connection, one daemon thread."""

    def __init__(self, url: str, origin: str, changed: LogChanged):
        self._url = url
        self._origin = origin
        self._changed = changed
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="listen-logs", daemon=True)
        self._thread.start()

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pause = _FIRST_PAUSE_SECONDS
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_SECONDS,
                                     application_name=APPLICATION_NAME, **_KEEPALIVES) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    pause = _FIRST_PAUSE_SECONDS
                    # Whatever was appended while no one listened: look at every log once.
                    self._tell(None, 0)
                    self._listen(conn)
            except psycopg.Error as exc:
                level = logging.INFO if self._stop.is_set() else logging.WARNING
                logger.log(level, "listening for appends failed (%s); polling until it reconnects",
                           error_reason(exc))
            except Exception:  # noqa: BLE001 - a listener that dies leaves only the slow poll: try again
                logger.exception("listening for appends failed; polling until it reconnects")
            finally:
                self._listening.clear()
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, _LONGEST_PAUSE_SECONDS)

    def _listen(self, conn: psycopg.Connection) -> None:
        while not self._stop.is_set():
            for note in conn.notifies(timeout=_WAKE_SECONDS):
                origin, seq, log_id = (note.payload.split(" ", 2) + ["", ""])[:3]
                if origin != self._origin and seq.isdigit() and log_id:
                    self._tell(log_id, int(seq))

    def _tell(self, log_id: str | None, seq: int) -> None:
        try:
            self._changed(log_id, seq)
        except Exception:  # noqa: BLE001 - the callback's failure must not end the listening
            logger.exception("handling an append notice failed")
