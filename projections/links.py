"""Typed links between memories."""

import sqlite3
from collections.abc import Sequence

from memory.events import MemoriesLinked, MemoryForgotten
from memory.log import StoredEvent
from projections.base import execute_script

__all__ = ["LinksProjection"]


class LinksProjection:
    name = "links"
    version = "1"

    def create(self, db: sqlite3.Connection) -> None:
        execute_script(db, 
            """
            CREATE TABLE IF NOT EXISTS links (
                source_id TEXT NOT NULL, target_id TEXT NOT NULL, link_type TEXT NOT NULL,
                created_at TEXT NOT NULL, seq INTEGER NOT NULL,
                PRIMARY KEY (source_id, target_id, link_type)
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS links_by_target ON links(target_id);
            """
        )

    def drop(self, db: sqlite3.Connection) -> None:
        db.execute("DROP TABLE IF EXISTS links")

    def apply(self, db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        for event in events:
            match event.payload:
                case MemoriesLinked(source_id=source, target_id=target, link_type=link_type):
                    db.execute(
                        "INSERT OR IGNORE INTO links VALUES (?, ?, ?, ?, ?)",
                        (source, target, link_type.value, event.recorded_at, event.seq),
                    )
                case MemoryForgotten(memory_id=memory_id):
                    db.execute("DELETE FROM links WHERE source_id = ? OR target_id = ?", (memory_id, memory_id))

    def snapshot(self, db: sqlite3.Connection) -> list[tuple]:
        return db.execute("SELECT * FROM links ORDER BY source_id, target_id, link_type").fetchall()

    def after_commit(self) -> None:
        pass

    def after_rollback(self) -> None:
        pass
