"""Full-text index (SQLite FTS5, porter stemming) over the text of memories that are not deleted,
each with the text of the memory stored just before it as context.

A memory is often a reply that makes sense only after what came before ("Super good! Rich and
creamy" after "How was the coconut ice cream?"). So each row indexes two columns: the memory's
own `text`, and as `context` the text of its predecessor: the live memory that the same client
stored just before it, if the two happened within `CONTEXT_GAP` of each other (by `occurred_at`,
else by when they were stored). Ranking weighs the context column lower and also uses the
predecessor links (`neighbours`).

Context is a function of the live memories alone: deleting, forgetting or editing a memory, or
moving it in time, re-indexes its successor, so a rebuild from the log gives the same index and
a forgotten text leaves no trace in its neighbour's row either.
"""

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from memory.events import MemoryDeleted, MemoryForgotten, MemoryRestored, MemoryStored, MemoryUpdated
from memory.log import StoredEvent
from projections.base import execute_script

__all__ = ["FullTextProjection", "CONTEXT_GAP", "neighbours"]

#: Two memories stored one after the other by the same client, no further apart in time than
#: this, are one conversation: the first is context for the second.
CONTEXT_GAP = timedelta(minutes=30)


def _epoch(stamp: str) -> float:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _close(a: str, b: str) -> bool:
    return abs(_epoch(a) - _epoch(b)) <= CONTEXT_GAP.total_seconds()


class FullTextProjection:
    name = "fulltext"
    version = "3"

    def create(self, db: sqlite3.Connection) -> None:
        execute_script(db, 
            """
            CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts
                USING fts5(memory_id UNINDEXED, text, context, tokenize = 'porter unicode61');
            CREATE TABLE IF NOT EXISTS fulltext_rows (
                memory_id TEXT PRIMARY KEY, fts_rowid INTEGER NOT NULL, client TEXT,
                recorded_at TEXT NOT NULL, occurred_at TEXT, prev_id TEXT
            );
            CREATE INDEX IF NOT EXISTS fulltext_rows_by_client ON fulltext_rows(client, fts_rowid);
            CREATE INDEX IF NOT EXISTS fulltext_rows_by_prev ON fulltext_rows(prev_id);
            """
        )

    def drop(self, db: sqlite3.Connection) -> None:
        execute_script(db, "DROP TABLE IF EXISTS memories_fts; DROP TABLE IF EXISTS fulltext_rows;")

    def apply(self, db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        forgotten = False
        for event in events:
            match event.payload:
                case MemoryRestored(memory_id=memory_id):
                    # Indexed again as if stored now (the row's seq orders conversations): the
                    # memories projection, applied first, has its text.
                    row = db.execute("SELECT text, occurred_at FROM memories WHERE id = ? AND deleted = 0",
                                     (memory_id,)).fetchone()
                    if row is not None:
                        self._insert(db, event, memory_id, row[0], row[1])
                case MemoryStored(memory_id=memory_id, text=text, occurred_at=occurred_at):
                    self._insert(db, event, memory_id, text, occurred_at)
                case MemoryUpdated(memory_id=memory_id) as update:
                    row = db.execute("SELECT fts_rowid FROM fulltext_rows WHERE memory_id = ?", (memory_id,)).fetchone()
                    if row is None:
                        continue  # deleted: not indexed
                    touched = [self._successor(db, memory_id)]
                    if isinstance(update.text, str):
                        db.execute("UPDATE memories_fts SET text = ? WHERE rowid = ?", (update.text, row[0]))
                    if update.occurred_at is not msgspec.UNSET:
                        db.execute("UPDATE fulltext_rows SET occurred_at = ? WHERE memory_id = ?",
                                   (update.occurred_at, memory_id))
                        touched.append(memory_id)
                    if isinstance(update.text, str) or update.occurred_at is not msgspec.UNSET:
                        self._relink(db, touched)
                case MemoryDeleted(memory_id=memory_id):
                    self._relink(db, self._remove(db, memory_id))
                case MemoryForgotten(memory_id=memory_id):
                    self._relink(db, self._remove(db, memory_id))
                    forgotten = True
        if forgotten:
            # FTS5 keeps deleted terms in its segments until they merge; merging everything
            # (with secure_delete on) is what makes the forgotten words leave the file.
            db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")

    def _insert(self, db: sqlite3.Connection, event: StoredEvent, memory_id: str, text: str,
                occurred_at: str | None) -> None:
        following = self._remove(db, memory_id)
        # The seq that stored the memory is a stable, unique rowid, and the newest: its
        # predecessor is the client's last row, and nothing follows it yet.
        client = event.actor.client_id
        prev = db.execute(
            "SELECT r.memory_id, coalesce(r.occurred_at, r.recorded_at), f.text FROM fulltext_rows r "
            "JOIN memories_fts f ON f.rowid = r.fts_rowid WHERE r.client IS ? "
            "ORDER BY r.fts_rowid DESC LIMIT 1", (client,),
        ).fetchone()
        if prev and not _close(prev[1], occurred_at or event.recorded_at):
            prev = None
        db.execute("INSERT INTO fulltext_rows VALUES (?, ?, ?, ?, ?, ?)",
                   (memory_id, event.seq, client, event.recorded_at, occurred_at, prev and prev[0]))
        db.execute("INSERT INTO memories_fts (rowid, memory_id, text, context) VALUES (?, ?, ?, ?)",
                   (event.seq, memory_id, text, prev[2] if prev else ""))
        self._relink(db, following)

    @staticmethod
    def _successor(db: sqlite3.Connection, memory_id: str) -> str | None:
        row = db.execute(
            "SELECT n.memory_id FROM fulltext_rows r JOIN fulltext_rows n ON n.client IS r.client "
            "AND n.fts_rowid > r.fts_rowid WHERE r.memory_id = ? ORDER BY n.fts_rowid LIMIT 1",
            (memory_id,),
        ).fetchone()
        return row[0] if row else None

    def _remove(self, db: sqlite3.Connection, memory_id: str) -> list[str]:
        """Drop the memory's row; return its successor, whose context must be recomputed."""
        row = db.execute("SELECT fts_rowid FROM fulltext_rows WHERE memory_id = ?", (memory_id,)).fetchone()
        if not row:
            return []
        following = self._successor(db, memory_id)
        db.execute("DELETE FROM memories_fts WHERE rowid = ?", row)
        db.execute("DELETE FROM fulltext_rows WHERE memory_id = ?", (memory_id,))
        return [following] if following else []

    @staticmethod
    def _relink(db: sqlite3.Connection, memory_ids: Iterable[str | None]) -> None:
        """Recompute each memory's predecessor and the context column it implies."""
        for memory_id in dict.fromkeys(m for m in memory_ids if m):
            row = db.execute(
                "SELECT fts_rowid, client, coalesce(occurred_at, recorded_at), prev_id FROM fulltext_rows "
                "WHERE memory_id = ?", (memory_id,),
            ).fetchone()
            if row is None:
                continue
            rowid, client, at, old_prev = row
            prev = db.execute(
                "SELECT memory_id, fts_rowid, coalesce(occurred_at, recorded_at) FROM fulltext_rows "
                "WHERE client IS ? AND fts_rowid < ? ORDER BY fts_rowid DESC LIMIT 1",
                (client, rowid),
            ).fetchone()
            if prev and not _close(prev[2], at):
                prev = None
            context = ""
            if prev:
                context = db.execute("SELECT text FROM memories_fts WHERE rowid = ?", (prev[1],)).fetchone()[0]
            current = db.execute("SELECT context FROM memories_fts WHERE rowid = ?", (rowid,)).fetchone()[0]
            if context != current:
                db.execute("UPDATE memories_fts SET context = ? WHERE rowid = ?", (context, rowid))
            new_prev = prev[0] if prev else None
            if new_prev != old_prev:
                db.execute("UPDATE fulltext_rows SET prev_id = ? WHERE memory_id = ?", (new_prev, memory_id))

    def snapshot(self, db: sqlite3.Connection) -> list[tuple]:
        return db.execute(
            "SELECT f.rowid, f.memory_id, f.text, f.context, r.client, r.recorded_at, r.occurred_at, r.prev_id "
            "FROM memories_fts f JOIN fulltext_rows r ON r.memory_id = f.memory_id ORDER BY f.rowid"
        ).fetchall()

    def after_commit(self) -> None:
        pass

    def after_rollback(self) -> None:
        pass


def neighbours(db: sqlite3.Connection, memory_ids: Iterable[str]) -> list[tuple[str, str]]:
    """(predecessor, memory) pairs touching any of the ids, from either side."""
    ids = msgspec.json.encode(list(memory_ids)).decode()
    return db.execute(
        "SELECT prev_id, memory_id FROM fulltext_rows WHERE prev_id IS NOT NULL AND "
        "(memory_id IN (SELECT value FROM json_each(?1)) OR prev_id IN (SELECT value FROM json_each(?1)))",
        (ids,),
    ).fetchall()
