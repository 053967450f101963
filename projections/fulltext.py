"""Full-text index (SQLite FTS5, porter stemming) over the text of memories that are not deleted."""

import sqlite3
from collections.abc import Sequence

from memory.events import MemoryDeleted, MemoryForgotten, MemoryStored, MemoryUpdated
from memory.log import StoredEvent
from projections.base import execute_script

__all__ = ["FullTextProjection"]


class FullTextProjection:
    name = "fulltext"
    version = "1"

    def create(self, db: sqlite3.Connection) -> None:
        execute_script(db, 
            """
            CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts
                USING fts5(memory_id UNINDEXED, text, tokenize = 'porter unicode61');
            CREATE TABLE IF NOT EXISTS fulltext_rows (memory_id TEXT PRIMARY KEY, fts_rowid INTEGER NOT NULL);
            """
        )

    def drop(self, db: sqlite3.Connection) -> None:
        execute_script(db, "DROP TABLE IF EXISTS memories_fts; DROP TABLE IF EXISTS fulltext_rows;")

    def apply(self, db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        forgotten = False
        for event in events:
            match event.payload:
                case MemoryStored(memory_id=memory_id, text=text):
                    self._remove(db, memory_id)
                    # The seq that stored the memory is a stable, unique rowid.
                    db.execute("INSERT INTO memories_fts (rowid, memory_id, text) VALUES (?, ?, ?)",
                               (event.seq, memory_id, text))
                    db.execute("INSERT INTO fulltext_rows VALUES (?, ?)", (memory_id, event.seq))
                case MemoryUpdated(memory_id=memory_id, text=str() as text):
                    row = db.execute("SELECT fts_rowid FROM fulltext_rows WHERE memory_id = ?", (memory_id,)).fetchone()
                    if row:
                        db.execute("DELETE FROM memories_fts WHERE rowid = ?", row)
                        db.execute("INSERT INTO memories_fts (rowid, memory_id, text) VALUES (?, ?, ?)",
                                   (row[0], memory_id, text))
                case MemoryDeleted(memory_id=memory_id):
                    self._remove(db, memory_id)
                case MemoryForgotten(memory_id=memory_id):
                    self._remove(db, memory_id)
                    forgotten = True
        if forgotten:
            # FTS5 keeps deleted terms in its segments until they merge; merging everything
            # (with secure_delete on) is what makes the forgotten words leave the file.
            db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")

    @staticmethod
    def _remove(db: sqlite3.Connection, memory_id: str) -> None:
        row = db.execute("SELECT fts_rowid FROM fulltext_rows WHERE memory_id = ?", (memory_id,)).fetchone()
        if row:
            db.execute("DELETE FROM memories_fts WHERE rowid = ?", row)
            db.execute("DELETE FROM fulltext_rows WHERE memory_id = ?", (memory_id,))

    def snapshot(self, db: sqlite3.Connection) -> list[tuple]:
        return db.execute("SELECT rowid, memory_id, text FROM memories_fts ORDER BY rowid").fetchall()

    def after_commit(self) -> None:
        pass

    def after_rollback(self) -> None:
        pass
