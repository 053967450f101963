"""Read-only questions asked of a user's SQLite log file without opening it as a store (no
writer, no chain check, no head anchor): whose log it is, and what it holds.

The SQL that reads a log lives with the log backend (this module and `memory.log`), never in
the layers above it: the user directory finds owners here, `memory stats` and /metrics count here.
"""

import sqlite3
from contextlib import closing
from pathlib import Path

import msgspec

from memory.identity import Identity

__all__ = ["LogTally", "log_owner", "tally_log"]


class LogTally(msgspec.Struct, kw_only=True, frozen=True):
    events: int
    last_event_at: str | None
    #: Events by type.
    by_type: dict[str, int]
    #: Reads by the operation (tool) that made them, "redacted" when erasure removed the payload;
    #: empty unless asked for.
    reads_by_operation: dict[str, int]
    #: Whether any event was recorded at or after the `since` asked about.
    active_since: bool


def _read_only(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)


def log_owner(path: Path) -> Identity:
    """The owner the log at `path` records (it claims one when it is created)."""
    with closing(_read_only(path)) as db:
        meta = dict(db.execute("SELECT key, value FROM log_meta"))
    return Identity(meta["owner_iss"], meta["owner_sub"])


def tally_log(path: Path, since: str, reads_by_operation: bool) -> LogTally:
    """What `memory stats` and /metrics report of one log. `since` is an RFC 3339 UTC time;
    counting reads by operation decodes every read's payload, so it is asked for only when wanted."""
    with closing(_read_only(path, timeout=10)) as db:
        events, last = db.execute("SELECT count(*), max(recorded_at) FROM events").fetchone()
        by_type = dict(db.execute("SELECT type, count(*) FROM events GROUP BY type"))
        reads = dict(db.execute(
            "SELECT coalesce(json_extract(CAST(payload AS TEXT), '$.operation'), 'redacted'), count(*) "
            "FROM events WHERE type = 'memories.read' GROUP BY 1")) if reads_by_operation else {}
        # recorded_at is indexed: the last day's events are found without a scan.
        active = db.execute("SELECT 1 FROM events WHERE recorded_at >= ? LIMIT 1", (since,)).fetchone() is not None
    return LogTally(events=events, last_event_at=last, by_type=by_type, reads_by_operation=reads, active_since=active)
