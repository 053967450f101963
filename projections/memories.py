"""Current memories, each memory's event history, and each client's active project."""

import json
import sqlite3
from collections.abc import Sequence

import msgspec

from memory.events import (
    MemoriesLinked,
    MemoriesRead,
    MemoryDeduplicated,
    MemoryDeleted,
    MemoryForgotten,
    MemoryRestored,
    MemoryStored,
    MemoryUpdated,
    ProjectSet,
)
from memory.log import StoredEvent
from projections.base import execute_script

__all__ = ["MemoriesProjection", "MEMORY_COLUMNS"]

MEMORY_COLUMNS = (
    "id, text, memory_type, scope, entity, project, task_id, tags, status, priority, "
    "created_at, updated_at, occurred_at, deleted, created_seq, updated_seq"
)
#: The fields an update may carry: those of its payload, but for whom it is about and its salt.
_UPDATABLE = tuple(f for f in MemoryUpdated.__struct_fields__ if f not in ("memory_id", "salt"))


class MemoriesProjection:
    name = "memories"
    version = "1"

    def create(self, db: sqlite3.Connection) -> None:
        execute_script(db, 
            """
            CREATE TABLE IF NOT EXISTS memories (
                id TEXT PRIMARY KEY, text TEXT NOT NULL, memory_type TEXT NOT NULL, scope TEXT NOT NULL,
                entity TEXT, project TEXT, task_id TEXT, tags TEXT NOT NULL, status TEXT,
                priority INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                occurred_at TEXT, deleted INTEGER NOT NULL DEFAULT 0,
                created_seq INTEGER NOT NULL, updated_seq INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS memories_by_project ON memories(project, memory_type);
            CREATE INDEX IF NOT EXISTS memories_by_entity ON memories(entity);
            CREATE INDEX IF NOT EXISTS memories_by_created ON memories(created_seq);
            CREATE TABLE IF NOT EXISTS memory_events (
                memory_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
                PRIMARY KEY (memory_id, seq)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS active_projects (
                client_id TEXT PRIMARY KEY, project TEXT NOT NULL, seq INTEGER NOT NULL
            );
            """
        )

    def drop(self, db: sqlite3.Connection) -> None:
        execute_script(db, 
            "DROP TABLE IF EXISTS memories; DROP TABLE IF EXISTS memory_events; "
            "DROP TABLE IF EXISTS active_projects;"
        )

    def apply(self, db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        for event in events:
            p = event.payload
            if p is None:  # redacted: its effect is undone by the tombstone that follows it
                continue
            match p:
                case MemoryStored():
                    db.execute(
                        f"INSERT OR REPLACE INTO memories ({MEMORY_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                        (p.memory_id, p.text, p.memory_type.value, p.scope.value, p.entity, p.project,
                         p.task_id, json.dumps(p.tags), p.status.value if p.status else None, p.priority,
                         event.recorded_at, event.recorded_at, p.occurred_at, event.seq, event.seq),
                    )
                    self._touch(db, p.memory_id, event)
                case MemoryUpdated():
                    changes = {f: getattr(p, f) for f in _UPDATABLE if getattr(p, f) is not msgspec.UNSET}
                    if "tags" in changes:
                        changes["tags"] = json.dumps(changes["tags"])
                    for key in ("memory_type", "status"):
                        if changes.get(key) is not None:
                            changes[key] = changes[key].value
                    sets = ", ".join(f"{k} = ?" for k in changes)
                    db.execute(
                        f"UPDATE memories SET {sets}{', ' if sets else ''}updated_at = ?, updated_seq = ? WHERE id = ?",
                        (*changes.values(), event.recorded_at, event.seq, p.memory_id),
                    )
                    self._touch(db, p.memory_id, event)
                case MemoryDeleted():
                    db.execute(
                        "UPDATE memories SET deleted = 1, updated_at = ?, updated_seq = ? WHERE id = ?",
                        (event.recorded_at, event.seq, p.memory_id),
                    )
                    self._touch(db, p.memory_id, event)
                case MemoryRestored():
                    db.execute(
                        "UPDATE memories SET deleted = 0, updated_at = ?, updated_seq = ? WHERE id = ?",
                        (event.recorded_at, event.seq, p.memory_id),
                    )
                    self._touch(db, p.memory_id, event)
                case MemoryForgotten():
                    db.execute("DELETE FROM memories WHERE id = ?", (p.memory_id,))
                    # A rebuild cannot see what a redacted event was, so incremental application
                    # must not remember it either: a redacted read leaves no trace on the other
                    # memories it returned, and the forgotten memory records each seq as redacted.
                    db.executemany("DELETE FROM memory_events WHERE seq = ?", [(seq,) for seq in p.redacted_seqs])
                    db.executemany(
                        "INSERT OR REPLACE INTO memory_events VALUES (?, ?, 'redacted')",
                        [(p.memory_id, seq) for seq in p.redacted_seqs],
                    )
                    self._touch(db, p.memory_id, event)
                case MemoriesLinked():
                    self._touch(db, p.source_id, event)
                    self._touch(db, p.target_id, event)
                case MemoryDeduplicated():
                    # The attempt shows in the history of the memory it duplicated.
                    self._touch(db, p.memory_id, event)
                case MemoriesRead():
                    for memory_id in p.returned_ids:
                        self._touch(db, memory_id, event)
                case ProjectSet():
                    db.execute(
                        "INSERT OR REPLACE INTO active_projects VALUES (?, ?, ?)",
                        (p.client_id or "", p.project, event.seq),
                    )

    @staticmethod
    def _touch(db: sqlite3.Connection, memory_id: str, event: StoredEvent) -> None:
        db.execute("INSERT OR IGNORE INTO memory_events VALUES (?, ?, ?)", (memory_id, event.seq, event.type))

    def snapshot(self, db: sqlite3.Connection) -> list[tuple]:
        return (
            db.execute(f"SELECT {MEMORY_COLUMNS} FROM memories ORDER BY id").fetchall()
            + db.execute("SELECT * FROM memory_events ORDER BY memory_id, seq").fetchall()
            + db.execute("SELECT * FROM active_projects ORDER BY client_id").fetchall()
        )

    def after_commit(self) -> None:
        pass

    def after_rollback(self) -> None:
        pass
