"""Typed links between memories, and the queries that read them back."""

import sqlite3
from collections.abc import Sequence

from memory.events import MemoriesLinked, MemoryForgotten
from memory.log import StoredEvent
from memory.model import Link, LinkType
from projections.base import execute_script

__all__ = ["LinksProjection", "links_of", "linked_ids"]

# Ids per query: well under SQLite's limit on bound parameters (each id is bound twice).
_CHUNK = 400


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


# -- reading ----------------------------------------------------------------------------------


def links_of(db: sqlite3.Connection, ids: list[str]) -> dict[str, list[Link]]:
    """Every link each memory takes part in, from either end: what a memory shows as its links."""
    found: dict[str, list[Link]] = {i: [] for i in ids}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT source_id, target_id, link_type FROM links WHERE source_id IN ({marks}) "
            f"UNION SELECT source_id, target_id, link_type FROM links WHERE target_id IN ({marks})",
            (*chunk, *chunk),
        )
        for source, target, link_type in rows:
            link = Link(source, target, LinkType(link_type))
            for end in (source, target):
                if end in found and link not in found[end]:
                    found[end].append(link)
    return found


def linked_ids(db: sqlite3.Connection, memory_id: str, limit: int) -> list[str]:
    """Ids of the memories linked to `memory_id` either way: the `related` of a retrieval result."""
    rows = db.execute(
        "SELECT target_id FROM links WHERE source_id = ? UNION SELECT source_id FROM links WHERE target_id = ? LIMIT ?",
        (memory_id, memory_id, limit),
    )
    return [r[0] for r in rows]
