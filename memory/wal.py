"""Switching a SQLite file to write-ahead logging, for every file the service opens.

`PRAGMA journal_mode=WAL` needs the file to itself for a moment. While another connection, in
this process or another, holds it (creating the schema of a file both just opened: two workers
starting on one data directory, two threads opening one person's new log), SQLite refuses the
switch at once with "database is locked" instead of waiting out the busy timeout. So the switch
is retried here, for up to 10 s by default.
"""

import sqlite3
import time

__all__ = ["use_wal"]

_RETRY_EVERY = 0.05


def use_wal(db: sqlite3.Connection, timeout: float = 10.0) -> None:
    """Put `db`'s file in WAL mode, waiting up to `timeout` seconds for another opener's lock."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(_RETRY_EVERY)
