"""Telling a duplicate from a new fact: the exact index and the near-duplicate rule.

Exact: two texts are the same memory when they are equal after Unicode normalisation (NFKC),
case folding and collapsing whitespace. `TextKeysProjection` keeps the SHA-256 of that form for
every live memory, so a store asks one indexed lookup, never a scan.

Near: the embeddings say two texts mean nearly the same, but cosine alone cannot tell "Bob
prefers email over phone calls" from "Bob prefers phone calls over email" (0.990) or a flight on
2026-05-08 from one on 2026-06-08 (0.990). So a near duplicate must also keep the numbers and
nearly the same characters in nearly the same order. The thresholds were chosen on the labelled
pairs of `bench/dedup_pairs.jsonl` (`bench/dedup.py` prints precision and recall).
"""

import difflib
import hashlib
import re
import sqlite3
import unicodedata
from collections.abc import Sequence

from memory.events import MemoryDeleted, MemoryForgotten, MemoryRestored, MemoryStored, MemoryUpdated
from memory.log import StoredEvent
from projections.base import execute_script

__all__ = [
    "TextKeysProjection",
    "normalised",
    "text_key",
    "is_near_duplicate",
    "memories_with_key",
    "NEAR_DUPLICATE_COSINE",
    "NEAR_DUPLICATE_CHARS",
    "SIMILAR_COSINE",
]

#: Cosine of the two embeddings at or above which two texts may be the same memory ... (int8
#: activations spread the labelled duplicates down to 0.932, from 0.946 in float: 0.945 then)
NEAR_DUPLICATE_COSINE = 0.93
#: ... if their normalised characters also agree this much (difflib's ratio) and their numbers match.
NEAR_DUPLICATE_CHARS = 0.86
#: A store answers with the live memories at least this close, so the assistant may update one instead.
SIMILAR_COSINE = 0.70
# difflib's ratio is quadratic in the worst case: longer texts are compared by their character counts.
_EXACT_RATIO_UP_TO = 600
_NUMBER = re.compile(r"\d+")


def normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_key(text: str) -> str:
    return hashlib.sha256(normalised(text).encode()).hexdigest()


def is_near_duplicate(a: str, b: str, cosine: float) -> bool:
    """Whether `b` says what `a` says, given the cosine of their embeddings."""
    if cosine < NEAR_DUPLICATE_COSINE:
        return False
    na, nb = normalised(a), normalised(b)
    if _NUMBER.findall(na) != _NUMBER.findall(nb):  # the same numbers in the same order
        return False
    matcher = difflib.SequenceMatcher(None, na, nb, autojunk=False)
    if matcher.real_quick_ratio() < NEAR_DUPLICATE_CHARS or matcher.quick_ratio() < NEAR_DUPLICATE_CHARS:
        return False
    if max(len(na), len(nb)) > _EXACT_RATIO_UP_TO:
        return True
    return matcher.ratio() >= NEAR_DUPLICATE_CHARS


def memories_with_key(db: sqlite3.Connection, key: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT memory_id FROM text_keys WHERE key = ?", (key,))]


class TextKeysProjection:
    """The normalised-text key of every memory that is not deleted."""

    name = "text_keys"
    version = "1"

    def create(self, db: sqlite3.Connection) -> None:
        execute_script(db, """
            CREATE TABLE IF NOT EXISTS text_keys (memory_id TEXT PRIMARY KEY, key TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS text_keys_by_key ON text_keys(key);
        """)

    def drop(self, db: sqlite3.Connection) -> None:
        db.execute("DROP TABLE IF EXISTS text_keys")

    def apply(self, db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        for event in events:
            match event.payload:
                case MemoryStored(memory_id=memory_id, text=text):
                    db.execute("INSERT OR REPLACE INTO text_keys VALUES (?, ?)", (memory_id, text_key(text)))
                case MemoryUpdated(memory_id=memory_id, text=str() as text):
                    db.execute("UPDATE text_keys SET key = ? WHERE memory_id = ?", (text_key(text), memory_id))
                case MemoryRestored(memory_id=memory_id):
                    row = db.execute("SELECT text FROM memories WHERE id = ? AND deleted = 0", (memory_id,)).fetchone()
                    if row is not None:
                        db.execute("INSERT OR REPLACE INTO text_keys VALUES (?, ?)", (memory_id, text_key(row[0])))
                case MemoryDeleted(memory_id=memory_id) | MemoryForgotten(memory_id=memory_id):
                    db.execute("DELETE FROM text_keys WHERE memory_id = ?", (memory_id,))

    def snapshot(self, db: sqlite3.Connection) -> list[tuple]:
        return db.execute("SELECT memory_id, key FROM text_keys ORDER BY memory_id").fetchall()

    def after_commit(self) -> None:
        pass

    def after_rollback(self) -> None:
        pass
