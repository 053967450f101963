"""Memory hygiene on store: is the new text already a live memory, which live memories are close
to it, and the events that mark older memories superseded.

The checks read only indexes retrieval already keeps: the normalised-text keys (one indexed
lookup) and the vector index (a scan of every memory's int8 vector), never every memory's text.
"""

import sqlite3

import msgspec
import numpy as np

from memory.events import EventPayload, MemoriesLinked, MemoryStored, MemoryUpdated
from memory.model import LinkType, Memory, Status
from memory.results import SimilarMemory
from projections.duplicates import SIMILAR_COSINE, is_near_duplicate, memories_with_key, text_key
from projections.memories import load_memories
from projections.vectors import VectorIndex

__all__ = ["StoreCheck", "check_store", "import_duplicate", "superseding", "MAX_SIMILAR"]

MAX_SIMILAR = 3
# Nearest vectors looked at: a duplicate must share entity, scope and project, so a few more
# than the similar ones are read in case the closest belong elsewhere.
_NEAREST = 12
# Records of the same import file looked at for each new one.
_NEAREST_IN_FILE = 8


class StoreCheck(msgspec.Struct, kw_only=True):
    duplicate: Memory | None = None
    match: str | None = None  # "exact" or "near"
    score: float = 0.0
    similar: list[SimilarMemory] = []


def _live(memory: Memory | None) -> bool:
    return memory is not None and not memory.deleted and memory.status != Status.SUPERSEDED


def _same_place(memory: Memory | MemoryStored, payload: MemoryStored) -> bool:
    return (memory.entity, memory.scope, memory.project) == (payload.entity, payload.scope, payload.project)


def check_store(db: sqlite3.Connection, index: VectorIndex, payload: MemoryStored, vector: np.ndarray | None,
                exclude: frozenset[str] = frozenset()) -> StoreCheck:
    """What the store of `payload` would duplicate, and the live memories most like it. `exclude`:
    ids that do not count (the memories the new one supersedes)."""
    check = StoreCheck()
    exact = load_memories(db, memories_with_key(db, text_key(payload.text)))
    for memory in sorted(exact.values(), key=lambda m: m.created_at):
        if memory.id not in exclude and _live(memory) and _same_place(memory, payload):
            check.duplicate, check.match, check.score = memory, "exact", 1.0
            break
    if vector is None:
        return check
    nearest = [(i, s) for i, s in index.search(vector, _NEAREST) if s >= SIMILAR_COSINE and i not in exclude]
    found = load_memories(db, [i for i, _ in nearest])
    for memory_id, score in nearest:
        memory = found.get(memory_id)
        if not _live(memory):
            continue
        if check.duplicate is None and _same_place(memory, payload) and is_near_duplicate(
                memory.text, payload.text, score):
            check.duplicate, check.match, check.score = memory, "near", round(score, 6)
        elif (check.duplicate is None or memory.id != check.duplicate.id) and len(check.similar) < MAX_SIMILAR:
            check.similar.append(SimilarMemory(id=memory.id, text=memory.text, score=round(score, 6)))
    return check


def import_duplicate(db: sqlite3.Connection, index: VectorIndex, batch: VectorIndex,
                     accepted: dict[str, MemoryStored], payload: MemoryStored, vector: np.ndarray) -> str | None:
    """The id `payload` would duplicate during an import: a live memory (`check_store`), or a
    record of the same file accepted before it (`batch` holds their vectors, by the same rules)."""
    check = check_store(db, index, payload, vector)
    if check.duplicate is not None:
        return check.duplicate.id
    key = text_key(payload.text)
    for other_id, score in batch.search(vector, _NEAREST_IN_FILE):
        other = accepted[other_id]
        if _same_place(other, payload) and (
                text_key(other.text) == key or is_near_duplicate(other.text, payload.text, score)):
            return other_id
    return None


def superseding(new_id: str, old_ids: list[str]) -> list[EventPayload]:
    """The events saying `new_id` replaces each of `old_ids`: a link, and the old one's status."""
    payloads: list[EventPayload] = []
    for old_id in dict.fromkeys(old_ids):
        payloads += [MemoriesLinked(source_id=new_id, target_id=old_id, link_type=LinkType.SUPERSEDES),
                     MemoryUpdated(memory_id=old_id, status=Status.SUPERSEDED)]
    return payloads
