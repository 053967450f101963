"""Current memories, each memory's event history, and each client's active project, and the
queries that read them back as domain structs."""

import json
import sqlite3
from collections.abc import Iterator, Sequence

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
from memory.model import Link, Memory, MemoryType, Scope, Status
from projections.base import execute_script
from projections.links import links_of

__all__ = [
    "MemoriesProjection",
    "MEMORY_COLUMNS",
    "load_memories",
    "load_memory",
    "memory_page",
    "memory_event_seqs",
    "latest_tagged",
    "recent_decisions",
    "open_tasks",
    "counts_by",
    "known_projects",
    "has_live_memory_in",
    "active_project",
    "texts_besides",
]

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


# -- reading ----------------------------------------------------------------------------------

# Ids per query: well under SQLite's limit on bound parameters.
_CHUNK = 400


def _memory(row: tuple, links: list[Link]) -> Memory:
    (id_, text, memory_type, scope, entity, project, task_id, tags, status, priority,
     created_at, updated_at, occurred_at, deleted, _created_seq, _updated_seq) = row
    return Memory(
        id=id_, text=text, memory_type=MemoryType(memory_type), scope=Scope(scope), entity=entity,
        project=project, task_id=task_id, tags=json.loads(tags), status=Status(status) if status else None,
        priority=priority, created_at=created_at, updated_at=updated_at, occurred_at=occurred_at,
        deleted=bool(deleted), links=links,
    )


def load_memories(db: sqlite3.Connection, ids: list[str]) -> dict[str, Memory]:
    """The memories with these ids (deleted ones too), with their links; an unknown id is left out."""
    rows: list[tuple] = []
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        rows += db.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id IN ({', '.join('?' * len(chunk))})", chunk
        ).fetchall()
    links = links_of(db, [r[0] for r in rows])
    return {r[0]: _memory(r, links[r[0]]) for r in rows}


def load_memory(db: sqlite3.Connection, memory_id: str) -> Memory | None:
    """One memory by id (`fetch`, and every tool that checks an id exists first)."""
    return load_memories(db, [memory_id]).get(memory_id)


def memory_page(db: sqlite3.Connection, *, memory_type: str | None, scope: str | None, project: str | None,
                entity: str | None, tag: str | None, before_seq: int | None, limit: int,
                deleted: bool = False) -> tuple[list[Memory], int | None]:
    """`list_memories` and the web pages' listings: live (or deleted) memories matching every
    filter given, most recently changed first, and the cursor of the next page. Each memory's
    `updated_seq` is its own (one event changes one memory)."""
    clauses, args = ["m.deleted = ?"], [int(deleted)]
    for column, value in (("memory_type", memory_type), ("scope", scope), ("project", project)):
        if value is not None:
            clauses.append(f"m.{column} = ?")
            args.append(value)
    if entity is not None:
        # The entity or one below it, as retrieval filters.
        clauses.append("(m.entity = ? OR substr(m.entity, 1, ?) = ?)")
        args += [entity, len(entity) + 1, entity + "."]
    if tag is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(m.tags) t WHERE t.value = ?)")
        args.append(tag)
    if before_seq is not None:
        clauses.append("m.updated_seq < ?")
        args.append(before_seq)
    rows = db.execute(f"SELECT id, updated_seq FROM memories m WHERE {' AND '.join(clauses)} "
                      "ORDER BY m.updated_seq DESC LIMIT ?", (*args, limit + 1)).fetchall()
    found = load_memories(db, [r[0] for r in rows[:limit]])
    return [found[r[0]] for r in rows[:limit]], (rows[limit - 1][1] if len(rows) > limit else None)


def memory_event_seqs(db: sqlite3.Connection, memory_id: str, after: int, limit: int) -> list[tuple[int, str]]:
    """(seq, type) of the events that touched a memory after `after`, oldest first: its history
    page, the events erasure redacts, and whether an imported record was stored before."""
    return db.execute(
        "SELECT seq, type FROM memory_events WHERE memory_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (memory_id, after, limit),
    ).fetchall()


def latest_tagged(db: sqlite3.Connection, tag: str, entity: str | None, project: str | None) -> str | None:
    """Id of the live memory of this entity and project most recently changed that carries `tag`:
    the status update or feedback a `sync_session` item replaces."""
    row = db.execute(
        "SELECT id FROM memories m WHERE deleted = 0 AND entity IS ? AND project IS ? "
        "AND EXISTS (SELECT 1 FROM json_each(m.tags) WHERE value = ?) ORDER BY updated_seq DESC LIMIT 1",
        (entity, project, tag),
    ).fetchone()
    return row[0] if row else None


def _recent_in_project(db: sqlite3.Connection, project: str, where: str, limit: int) -> list[Memory]:
    ids = [r[0] for r in db.execute(
        f"SELECT id FROM memories m WHERE deleted = 0 AND project = ? AND {where} "
        "ORDER BY updated_seq DESC LIMIT ?", (project, limit))]
    found = load_memories(db, ids)
    return [found[i] for i in ids]


def recent_decisions(db: sqlite3.Connection, project: str, limit: int) -> list[Memory]:
    """A project summary's decisions: its live memories tagged `decision`, most recently changed first."""
    return _recent_in_project(db, project, "EXISTS (SELECT 1 FROM json_each(m.tags) WHERE value = 'decision')", limit)


def open_tasks(db: sqlite3.Connection, project: str, limit: int) -> list[Memory]:
    """A project summary's open tasks: its live task instructions still active (or without a
    status), most recently changed first."""
    return _recent_in_project(
        db, project, "memory_type = 'task_instruction' AND (status IS NULL OR status = 'active')", limit)


def counts_by(db: sqlite3.Connection, column: str, project: str | None = None) -> dict[str, int]:
    """Live memories counted by type or status ('none' for no status), in one project or all:
    `get_context_info` and a project summary."""
    assert column in ("memory_type", "status")
    where, args = "deleted = 0", []
    if project is not None:
        where += " AND project = ?"
        args.append(project)
    rows = db.execute(f"SELECT coalesce({column}, 'none'), count(*) FROM memories WHERE {where} GROUP BY 1", args)
    return dict(rows)


def known_projects(db: sqlite3.Connection, limit: int = 50) -> list[str]:
    """The projects live memories name, sorted: `get_context_info` and `set_project`'s refusal."""
    rows = db.execute(
        "SELECT DISTINCT project FROM memories WHERE project IS NOT NULL AND deleted = 0 ORDER BY project LIMIT ?",
        (limit,),
    )
    return [r[0] for r in rows]


def has_live_memory_in(db: sqlite3.Connection, project: str) -> bool:
    """Does a live memory name this project? Then `set_project` accepts it."""
    row = db.execute("SELECT 1 FROM memories WHERE project = ? AND deleted = 0 LIMIT 1", (project,)).fetchone()
    return row is not None


def active_project(db: sqlite3.Connection, client_id: str | None) -> str | None:
    """The project `set_project` last chose for this client (None: none yet)."""
    row = db.execute("SELECT project FROM active_projects WHERE client_id = ?", (client_id or "",)).fetchone()
    return row[0] if row else None


def texts_besides(db: sqlite3.Connection, memory_id: str) -> Iterator[str]:
    """The texts and entity names of every memory but `memory_id`: what erasure must not take
    for the forgotten memory's own words."""
    for text, entity in db.execute("SELECT text, entity FROM memories WHERE id != ?", (memory_id,)):
        yield text
        if entity:
            yield entity
