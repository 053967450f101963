"""Projections and the machinery that keeps them caught up with a user's log.

A projection turns events into tables. Each one records the last seq it applied (its checkpoint)
and its version; a version change (new code, new embedding model) makes it rebuild from seq 1.
All projections of a user advance in one transaction per batch, so a reader never sees the
memories table ahead of the full-text index; only the embeddings may be left a few events
behind, to be caught up before the next read that needs them (`UserStore.append`).
"""

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from memory.log import EventStore, StoredEvent
from memory.wal import use_wal

__all__ = ["Projection", "ProjectionSet", "open_projection_db", "execute_script", "passes_quick_check",
           "stored_checkpoints", "PROJECTIONS_FILE"]

_BATCH = 500
#: A user's projections, beside their log (`memory.log.LOG_FILE`) in the user's folder.
PROJECTIONS_FILE = "projections.sqlite"


class Projection(Protocol):
    name: str

    @property
    def version(self) -> str: ...

    def create(self, db: sqlite3.Connection) -> None: ...

    def drop(self, db: sqlite3.Connection) -> None: ...

    def apply(self, db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        """Apply events in seq order, inside the caller's transaction."""
        ...

    def snapshot(self, db: sqlite3.Connection) -> list[tuple]:
        """The projection's content in a canonical order: equal snapshots mean equal state."""
        ...

    def after_commit(self) -> None:
        """The batch is durable: publish in-memory state (the vector index) that mirrors it."""
        ...

    def after_rollback(self) -> None: ...


def execute_script(db: sqlite3.Connection, script: str) -> None:
    """Run several statements inside the caller's transaction (`executescript` would commit it)."""
    statement = ""
    for part in script.split(";"):
        statement += part + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                db.execute(statement)
            statement = ""


def open_projection_db(path: str | Path) -> sqlite3.Connection:
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    use_wal(db)
    # Derived data: a lost tail after a power cut is replayed from the log, so skip the fsyncs.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA secure_delete=ON")
    db.execute(
        "CREATE TABLE IF NOT EXISTS projection_state "
        "(name TEXT PRIMARY KEY, version TEXT NOT NULL, checkpoint INTEGER NOT NULL)"
    )
    return db


def passes_quick_check(db: sqlite3.Connection) -> bool:
    """SQLite's own check of the file's structure: a projection file that fails it is set aside and rebuilt."""
    return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def stored_checkpoints(db: sqlite3.Connection) -> dict[str, int]:
    """Each projection's checkpoint as the file records it (what `memory verify` compares with a rebuild)."""
    return dict(db.execute("SELECT name, checkpoint FROM projection_state"))


class ProjectionSet:
    """One user's projections over one database connection. Not thread-safe: the caller locks."""

    def __init__(self, db: sqlite3.Connection, projections: Sequence[Projection]):
        self.db = db
        self.projections = list(projections)
        self._checkpoints: dict[str, int] = {}
        self._prepare()

    def _prepare(self) -> None:
        state = {n: (v, c) for n, v, c in self.db.execute("SELECT name, version, checkpoint FROM projection_state")}
        self.db.execute("BEGIN")
        for p in self.projections:
            version, checkpoint = state.get(p.name, (None, 0))
            if version != p.version:
                p.drop(self.db)
                checkpoint = 0
                self.db.execute(
                    "INSERT OR REPLACE INTO projection_state VALUES (?, ?, 0)", (p.name, p.version)
                )
            p.create(self.db)
            self._checkpoints[p.name] = checkpoint
        self.db.execute("COMMIT")

    @property
    def checkpoint(self) -> int:
        """The seq every projection has reached."""
        return min(self._checkpoints.values(), default=0)

    def checkpoints(self) -> dict[str, int]:
        return dict(self._checkpoints)

    def catch_up(
        self, log: EventStore, to_seq: int | None = None, progress: Callable[[int], None] | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> int:
        """Apply what the log has beyond the checkpoints (up to `to_seq`); return how many events.
        Projections named in `skip` stay where they are, to be caught up by a later call."""
        applied = 0
        batch: list[StoredEvent] = []
        start = min((c for n, c in self._checkpoints.items() if n not in skip), default=0)
        for event in log.read_events(start, to_seq):
            batch.append(event)
            if len(batch) >= _BATCH:
                applied += self._apply(batch, progress, skip)
                batch = []
        if batch:
            applied += self._apply(batch, progress, skip)
        return applied

    def rebuild(
        self, log: EventStore, to_seq: int | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        self.db.execute("BEGIN")
        try:
            for p in self.projections:
                p.drop(self.db)
                p.create(self.db)
                self._set_checkpoint(p.name, 0)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        for p in self.projections:
            p.after_commit()
        return self.catch_up(log, to_seq, progress)

    def _apply(self, batch: list[StoredEvent], progress: Callable[[int], None] | None,
               skip: frozenset[str] = frozenset()) -> int:
        self.db.execute("BEGIN")
        try:
            for p in self.projections:
                if p.name in skip:
                    continue
                pending = [e for e in batch if e.seq > self._checkpoints[p.name]]
                if pending:
                    p.apply(self.db, pending)
                    self._set_checkpoint(p.name, pending[-1].seq)
            self.db.execute("COMMIT")
        except BaseException:
            # A full disk makes SQLite roll back on its own; a second ROLLBACK would raise and
            # leave the checkpoints below claiming events that were never applied.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            for p in self.projections:
                p.after_rollback()
            self._checkpoints = {
                n: c for n, c in self.db.execute("SELECT name, checkpoint FROM projection_state")
            }
            raise
        for p in self.projections:
            p.after_commit()
        if progress:
            progress(len(batch))
        return len(batch)

    def _set_checkpoint(self, name: str, seq: int) -> None:
        self.db.execute("UPDATE projection_state SET checkpoint = ? WHERE name = ?", (seq, name))
        self._checkpoints[name] = seq

    def truncate_wal(self) -> None:
        """Copy the WAL into the database file and empty it: after an erasure, no copy of the
        pages that held the forgotten text is left in the WAL (secure_delete zeroes the file's)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def snapshot(self) -> dict[str, list[tuple]]:
        return {p.name: p.snapshot(self.db) for p in self.projections}
