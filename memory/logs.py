"""Where every person's log lives: the `LogDirectory` seam and its SQLite implementation.

A `LogDirectory` opens (creating on first use) the log of an owner, says whether one exists, lists
every log with its owner as the log itself records it, and tallies a log for `memory stats`.
`SqliteLogDirectory` keeps one file per person under `<data_dir>/users/`; `PostgresLogDirectory`
(memory/postgres_log.py) keeps every log in one database. `open_log_directory` picks one from a
database URL: the one place the backend is chosen.

Where other processes append to the same logs, the directory also says how a person's
check-then-append stays atomic across them (`writer_lock`) and, when it can, tells this process
of their appends as they commit (`watch`); without that (SQLite) the service polls.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import msgspec

from memory.identity import Identity
from memory.log import LOG_FILE, USERS_DIR, EventStore, SqliteEventLog, log_path, user_folder
from memory.log_reports import log_owner, tally_log
from memory.signing import KeyRing
from memory.userlock import CrossLock, FileLock

__all__ = ["LogDirectory", "LogTally", "LogWatch", "LogChanged", "SqliteLogDirectory", "open_log_directory",
           "sqlite_logs", "is_database_url"]

#: Told of another process's append: (the log's id, which is its owner's key; its new head seq),
#: or (None, 0) when appends may have gone untold (the feed was down): look at every log.
LogChanged = Callable[[str | None, int], None]


class LogWatch(Protocol):
    """A running feed of other processes' appends (`LogDirectory.watch`)."""

    @property
    def listening(self) -> bool:
        """Whether appends are being told right now (False while the feed reconnects)."""
        ...

    def close(self) -> None: ...


class LogTally(msgspec.Struct, kw_only=True):
    """What `memory stats` and /metrics count in one log, without decoding it."""

    events: int
    last_event_at: str | None
    #: event type -> count
    by_type: dict[str, int]
    #: "read:<tool>" -> count of reads that tool made (redacted reads count as "read:redacted")
    reads: dict[str, int]
    #: whether the log has an event recorded at or after the `since` asked about
    active: bool


class LogDirectory(Protocol):
    keys: KeyRing

    def open(self, owner: Identity) -> EventStore:
        """`owner`'s log, created empty when there is none; the caller closes it."""
        ...

    def exists(self, owner: Identity) -> bool: ...

    def list_logs(self) -> Iterator[tuple[str, Identity]]:
        """(the name the log is stored under, its owner as the log records it) for every log, in
        name order. The name should be the owner's key; isolation-check reports any that is not."""
        ...

    def tally(self, owner: Identity, since: str, operations: bool) -> LogTally:
        """Counts of `owner`'s log; `operations` also counts reads by tool (reads every read's payload)."""
        ...

    def writer_lock(self, owner: Identity, *, processes: bool) -> CrossLock | None:
        """What makes a check-then-append on `owner`'s log atomic across processes (memory/userlock.py),
        or None when nothing but this process writes it. `processes`: other worker processes serve
        the same data directory."""
        ...

    def watch(self, changed: LogChanged) -> LogWatch | None:
        """Call `changed` (on a thread of the watch's own) for every append another process
        commits; None when this directory cannot tell, and whoever follows the logs polls."""
        ...

    def close(self) -> None: ...


def is_database_url(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0] in ("postgresql", "postgres")


def open_log_directory(data_dir: str | Path, keys: KeyRing, database_url: str | None = None) -> LogDirectory:
    """PostgreSQL when a database URL is given, else the SQLite files under `data_dir`."""
    if database_url:
        if not is_database_url(database_url):
            raise ValueError(f"the database URL must start with postgresql:// (got {database_url.split(':', 1)[0]!r})")
        # Imported here: psycopg is the optional [postgres] extra, not needed by the default install.
        from memory.postgres_log import PostgresLogDirectory

        return PostgresLogDirectory(database_url, keys)
    return SqliteLogDirectory(data_dir, keys)


def sqlite_logs(data_dir: str | Path) -> Iterator[tuple[Path, Identity]]:
    """Every user folder under `data_dir` with a log, and its owner as the log itself records it."""
    for path in sorted((Path(data_dir) / USERS_DIR).glob(f"*/{LOG_FILE}")):
        yield path.parent, log_owner(path)


class SqliteLogDirectory:
    """One SQLite file per person: `<data_dir>/users/<owner key>/events.sqlite`."""

    def __init__(self, data_dir: str | Path, keys: KeyRing):
        self.data_dir = Path(data_dir)
        self.keys = keys

    def __str__(self) -> str:
        return str(self.data_dir)

    def open(self, owner: Identity) -> SqliteEventLog:
        return SqliteEventLog(log_path(self.data_dir, owner), owner, self.keys)

    def exists(self, owner: Identity) -> bool:
        return log_path(self.data_dir, owner).exists()

    def list_logs(self) -> Iterator[tuple[str, Identity]]:
        for folder, owner in sqlite_logs(self.data_dir):
            yield folder.name, owner

    def tally(self, owner: Identity, since: str, operations: bool) -> LogTally:
        counted = tally_log(log_path(self.data_dir, owner), since, reads_by_operation=operations)
        return LogTally(events=counted.events, last_event_at=counted.last_event_at, by_type=counted.by_type,
                        reads={f"read:{op}": n for op, n in counted.reads_by_operation.items()},
                        active=counted.active_since)

    def writer_lock(self, owner: Identity, *, processes: bool) -> FileLock | None:
        # Worker processes on this one machine: a file lock beside the person's log. Alone, the
        # process's thread lock is enough.
        return FileLock(user_folder(self.data_dir, owner) / "writer.lock") if processes else None

    def watch(self, changed: LogChanged) -> None:
        return None  # SQLite tells no one of a commit: workers poll

    def close(self) -> None:
        pass  # each log is a file of its own, closed with its store
