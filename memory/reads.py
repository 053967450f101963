"""Reading the projections back into domain structs. Every function takes the view's database."""

import difflib
import json
import sqlite3
from collections.abc import Iterator

from memory.model import Entity, Link, LinkType, Memory, MemoryType, Scope, Status
from projections.memories import MEMORY_COLUMNS

__all__ = [
    "load_memory",
    "load_memories",
    "linked_ids",
    "entity_page",
    "find_entities",
    "project_exists",
    "known_projects",
    "entity_roots",
    "counts_by",
    "active_project",
    "memory_event_seqs",
    "memory_page",
    "texts_besides",
]


def _memory(row: tuple, links: list[Link]) -> Memory:
    (id_, text, memory_type, scope, entity, project, task_id, tags, status, priority,
     created_at, updated_at, occurred_at, deleted, _created_seq, _updated_seq) = row
    return Memory(
        id=id_, text=text, memory_type=MemoryType(memory_type), scope=Scope(scope), entity=entity,
        project=project, task_id=task_id, tags=json.loads(tags), status=Status(status) if status else None,
        priority=priority, created_at=created_at, updated_at=updated_at, occurred_at=occurred_at,
        deleted=bool(deleted), links=links,
    )


def _links(db: sqlite3.Connection, ids: list[str]) -> dict[str, list[Link]]:
    found: dict[str, list[Link]] = {i: [] for i in ids}
    for i in range(0, len(ids), 400):
        chunk = ids[i : i + 400]
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


def load_memories(db: sqlite3.Connection, ids: list[str]) -> dict[str, Memory]:
    rows: list[tuple] = []
    for i in range(0, len(ids), 400):
        chunk = ids[i : i + 400]
        rows += db.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id IN ({', '.join('?' * len(chunk))})", chunk
        ).fetchall()
    links = _links(db, [r[0] for r in rows])
    return {r[0]: _memory(r, links[r[0]]) for r in rows}


def load_memory(db: sqlite3.Connection, memory_id: str) -> Memory | None:
    return load_memories(db, [memory_id]).get(memory_id)


def linked_ids(db: sqlite3.Connection, memory_id: str, limit: int) -> list[str]:
    rows = db.execute(
        "SELECT target_id FROM links WHERE source_id = ? UNION SELECT source_id FROM links WHERE target_id = ? LIMIT ?",
        (memory_id, memory_id, limit),
    )
    return [r[0] for r in rows]


def _entity(row: tuple) -> Entity:
    name, description, parent, registered, count, first, last = row
    return Entity(name=name, description=description, parent=parent, registered=bool(registered),
                  memory_count=count, first_seen=first, last_seen=last)


def entity_page(db: sqlite3.Connection, prefix: str | None, after: str | None, limit: int) -> tuple[list[Entity], str | None]:
    args: list = [after or ""]
    where = "name > ?"
    if prefix:
        where += " AND (name = ? OR substr(name, 1, ?) = ?)"
        args += [prefix, len(prefix) + 1, prefix + "."]
    rows = db.execute(f"SELECT * FROM entities WHERE {where} ORDER BY name LIMIT ?", (*args, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return [_entity(r) for r in rows], (rows[-1][0] if more else None)


def find_entities(db: sqlite3.Connection, query: str, limit: int) -> list[Entity]:
    """Fuzzy: substring hits first, then names that look alike (typos, other separators)."""
    q = query.strip().lower()
    scored: list[tuple[float, tuple]] = []
    for row in db.execute("SELECT * FROM entities"):
        name = row[0].lower()
        description = (row[1] or "").lower()
        leaf = name.rsplit(".", 1)[-1]
        score = max(
            difflib.SequenceMatcher(None, q, name).ratio(),
            difflib.SequenceMatcher(None, q, leaf).ratio(),
        )
        if q in name:
            score += 1.0
        elif q and q in description:
            score += 0.5
        if score >= 0.6:
            scored.append((score, row))
    scored.sort(key=lambda s: (-s[0], s[1][0]))
    return [_entity(r) for _, r in scored[:limit]]


def project_exists(db: sqlite3.Connection, project: str) -> bool:
    return bool(
        db.execute("SELECT 1 FROM entities WHERE name = ? AND parent IS NULL", (project,)).fetchone()
        or db.execute("SELECT 1 FROM memories WHERE project = ? AND deleted = 0 LIMIT 1", (project,)).fetchone()
    )


def known_projects(db: sqlite3.Connection, limit: int = 50) -> list[str]:
    rows = db.execute(
        "SELECT DISTINCT project FROM memories WHERE project IS NOT NULL AND deleted = 0 ORDER BY project LIMIT ?",
        (limit,),
    )
    return [r[0] for r in rows]


def entity_roots(db: sqlite3.Connection, limit: int = 50) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM entities WHERE parent IS NULL ORDER BY name LIMIT ?", (limit,))]


def counts_by(db: sqlite3.Connection, column: str, project: str | None = None) -> dict[str, int]:
    assert column in ("memory_type", "status")
    where, args = "deleted = 0", []
    if project is not None:
        where += " AND project = ?"
        args.append(project)
    rows = db.execute(f"SELECT coalesce({column}, 'none'), count(*) FROM memories WHERE {where} GROUP BY 1", args)
    return dict(rows)


def active_project(db: sqlite3.Connection, client_id: str | None) -> str | None:
    row = db.execute("SELECT project FROM active_projects WHERE client_id = ?", (client_id or "",)).fetchone()
    return row[0] if row else None


def memory_event_seqs(db: sqlite3.Connection, memory_id: str, after: int, limit: int) -> list[tuple[int, str]]:
    return db.execute(
        "SELECT seq, type FROM memory_events WHERE memory_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (memory_id, after, limit),
    ).fetchall()


def memory_page(db: sqlite3.Connection, *, memory_type: str | None, scope: str | None, project: str | None,
                entity: str | None, tag: str | None, before_seq: int | None, limit: int,
                deleted: bool = False) -> tuple[list[Memory], int | None]:
    """Live memories matching every filter given, most recently changed first, and the cursor of
    the next page. Each memory's `updated_seq` is its own (one event changes one memory)."""
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


def texts_besides(db: sqlite3.Connection, memory_id: str) -> Iterator[str]:
    """Every text the person keeps but `memory_id`: other memories' texts and entities, and the
    names and descriptions of registered entities (what erasure must not count as its own)."""
    for text, entity in db.execute("SELECT text, entity FROM memories WHERE id != ?", (memory_id,)):
        yield text
        if entity:
            yield entity
    for name, description in db.execute("SELECT name, description FROM entities WHERE registered = 1"):
        yield name
        if description:
            yield description
