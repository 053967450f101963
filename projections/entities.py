"""The entity tree: registered entities, entities named by memories, and their dotted ancestors.

Every row is recomputed from what currently refers to it (registrations and live memories), so
forgetting the last memory that named an entity removes the entity too, exactly as a rebuild
from the redacted log would.
"""

import difflib
import sqlite3
from collections.abc import Iterator, Sequence

import msgspec

from memory.events import (
    EntityRegistered,
    MemoryDeleted,
    MemoryForgotten,
    MemoryRestored,
    MemoryStored,
    MemoryUpdated,
)
from memory.log import StoredEvent
from memory.model import Entity
from projections.base import execute_script

__all__ = ["EntitiesProjection", "parent_of", "entity_page", "find_entities", "entity_roots", "is_root_entity",
           "registered_texts"]


def parent_of(name: str) -> str | None:
    head, dot, _ = name.rpartition(".")
    return head if dot and head else None


class EntitiesProjection:
    name = "entities"
    version = "1"

    def create(self, db: sqlite3.Connection) -> None:
        execute_script(db, 
            """
            CREATE TABLE IF NOT EXISTS entities (
                name TEXT PRIMARY KEY, description TEXT, parent TEXT, registered INTEGER NOT NULL,
                memory_count INTEGER NOT NULL, first_seen TEXT, last_seen TEXT
            );
            CREATE INDEX IF NOT EXISTS entities_by_parent ON entities(parent);
            CREATE TABLE IF NOT EXISTS entity_registrations (
                name TEXT PRIMARY KEY, description TEXT, parent TEXT
            );
            CREATE TABLE IF NOT EXISTS entity_members (
                memory_id TEXT PRIMARY KEY, entity TEXT NOT NULL, seen_at TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS entity_members_by_entity ON entity_members(entity);
            """
        )

    def drop(self, db: sqlite3.Connection) -> None:
        execute_script(db, 
            "DROP TABLE IF EXISTS entities; DROP TABLE IF EXISTS entity_registrations; "
            "DROP TABLE IF EXISTS entity_members;"
        )

    def apply(self, db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        dirty: set[str] = set()
        for event in events:
            match event.payload:
                case MemoryStored(memory_id=memory_id, entity=str() as entity):
                    db.execute("INSERT OR REPLACE INTO entity_members VALUES (?, ?, ?)",
                               (memory_id, entity, event.recorded_at))
                    dirty.add(entity)
                case MemoryUpdated(memory_id=memory_id, entity=entity) if entity is not msgspec.UNSET:
                    dirty.update(self._remove_member(db, memory_id))
                    if entity is not None:
                        db.execute("INSERT INTO entity_members VALUES (?, ?, ?)",
                                   (memory_id, entity, event.recorded_at))
                        dirty.add(entity)
                case MemoryDeleted(memory_id=memory_id) | MemoryForgotten(memory_id=memory_id):
                    dirty.update(self._remove_member(db, memory_id))
                case MemoryRestored(memory_id=memory_id):
                    row = db.execute("SELECT entity FROM memories WHERE id = ? AND deleted = 0 AND entity IS NOT NULL",
                                     (memory_id,)).fetchone()
                    if row is not None:
                        db.execute("INSERT OR REPLACE INTO entity_members VALUES (?, ?, ?)",
                                   (memory_id, row[0], event.recorded_at))
                        dirty.add(row[0])
                case EntityRegistered(name=name, description=description, parent=parent):
                    db.execute("INSERT OR REPLACE INTO entity_registrations VALUES (?, ?, ?)",
                               (name, description, parent))
                    dirty.add(name)
        for name in sorted(dirty, key=lambda n: -n.count(".")):
            self._refresh(db, name)

    @staticmethod
    def _remove_member(db: sqlite3.Connection, memory_id: str) -> list[str]:
        row = db.execute("SELECT entity FROM entity_members WHERE memory_id = ?", (memory_id,)).fetchone()
        db.execute("DELETE FROM entity_members WHERE memory_id = ?", (memory_id,))
        return [row[0]] if row else []

    def _refresh(self, db: sqlite3.Connection, name: str | None) -> None:
        """Recompute `name` from what refers to it; when its row changes, recompute the parents it
        had and has. A row that comes out the same stops the walk, so cycles end."""
        todo = [name] if name else []
        while todo:
            name = todo.pop()
            before = db.execute("SELECT * FROM entities WHERE name = ?", (name,)).fetchone()
            reg = db.execute(
                "SELECT description, parent FROM entity_registrations WHERE name = ?", (name,)
            ).fetchone()
            count, first, last = db.execute(
                "SELECT count(*), min(seen_at), max(seen_at) FROM entity_members WHERE entity = ?", (name,)
            ).fetchone()
            parent = (reg[1] if reg and reg[1] else None) or parent_of(name)
            has_children = db.execute(
                "SELECT 1 FROM entities WHERE parent = ? AND name != ? LIMIT 1", (name, name)
            ).fetchone()
            after = (name, reg[0] if reg else None, parent, 1 if reg else 0, count, first, last)
            if not (reg or count or has_children):
                after = None
            if after == before:
                continue
            if after:
                db.execute("INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?, ?, ?, ?)", after)
            else:
                db.execute("DELETE FROM entities WHERE name = ?", (name,))
            todo += [p for p in {before[2] if before else None, parent} if p and p != name]

    def snapshot(self, db: sqlite3.Connection) -> list[tuple]:
        return (
            db.execute("SELECT * FROM entities ORDER BY name").fetchall()
            + db.execute("SELECT * FROM entity_registrations ORDER BY name").fetchall()
            + db.execute("SELECT * FROM entity_members ORDER BY memory_id").fetchall()
        )

    def after_commit(self) -> None:
        pass

    def after_rollback(self) -> None:
        pass


# -- reading ----------------------------------------------------------------------------------


def _entity(row: tuple) -> Entity:
    name, description, parent, registered, count, first, last = row
    return Entity(name=name, description=description, parent=parent, registered=bool(registered),
                  memory_count=count, first_seen=first, last_seen=last)


def entity_page(db: sqlite3.Connection, prefix: str | None, after: str | None,
                limit: int) -> tuple[list[Entity], str | None]:
    """`list_entities`: entities by name after the cursor `after`, `prefix` and those below it,
    and the cursor of the next page (None on the last one)."""
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
    """`search_entities`, fuzzy: substring hits first, then names that look alike (typos, other separators)."""
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


def entity_roots(db: sqlite3.Connection, limit: int = 50) -> list[str]:
    """Top-level entity names, sorted: what `get_context_info` and `set_project`'s refusal list."""
    return [r[0] for r in db.execute("SELECT name FROM entities WHERE parent IS NULL ORDER BY name LIMIT ?", (limit,))]


def is_root_entity(db: sqlite3.Connection, name: str) -> bool:
    """Is `name` a top-level entity? Such an entity is a project `set_project` accepts."""
    return db.execute("SELECT 1 FROM entities WHERE name = ? AND parent IS NULL", (name,)).fetchone() is not None


def registered_texts(db: sqlite3.Connection) -> Iterator[str]:
    """Names and descriptions of registered entities: text erasure must not take for a forgotten memory's own."""
    for name, description in db.execute("SELECT name, description FROM entities WHERE registered = 1"):
        yield name
        if description:
            yield description
