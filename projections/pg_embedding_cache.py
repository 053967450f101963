"""The embedding cache in PostgreSQL, shared by every replica: a replica that opens a person for the
first time (or rebuilds them) finds the vectors another already computed, and pays the model only
for texts no replica has embedded.

Rows are keyed by (owner, model id, text hash): one person's cache, as in SQLite, not a pool of
everyone's. So forgetting a text deletes that person's vector whatever anyone else stores, and
how fast a store answers says nothing about whether another person ever stored the same words.
Writes commit at once, outside the projection's transaction: a vector cached for a batch that then
rolls back is a harmless extra (the cache is keyed by content, never by memory), and a delete on
erasure is never undone.
"""

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from memory.pgpool import create_schema
from projections.embedding_cache import CHUNK

__all__ = ["PostgresEmbeddingCache", "postgres_embedding_caches"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedding_cache (
    owner TEXT NOT NULL, model_id TEXT NOT NULL, text_hash TEXT NOT NULL, vector BYTEA NOT NULL,
    PRIMARY KEY (owner, model_id, text_hash));
CREATE INDEX IF NOT EXISTS embedding_cache_by_hash ON embedding_cache (owner, text_hash);
"""


class PostgresEmbeddingCache:
    """One person's vectors (`owner`: their `Identity.key`) in the shared table."""

    def __init__(self, pool: Any, owner: str):
        self._pool = pool
        self.owner = owner

    def get(self, model_id: str, hashes: Collection[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        ordered = sorted(hashes)
        if not ordered:
            return found
        with self._pool.connection() as conn:
            for i in range(0, len(ordered), CHUNK):
                rows = conn.execute(
                    "SELECT text_hash, vector FROM embedding_cache WHERE owner = %s AND model_id = %s "
                    "AND text_hash = ANY(%s)", (self.owner, model_id, ordered[i : i + CHUNK]))
                found.update((h, np.frombuffer(v, dtype=np.float32)) for h, v in rows)
        return found

    def put(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        if not vectors:
            return
        # In key order: two replicas caching overlapping texts never wait on each other in a cycle.
        rows = [(self.owner, model_id, h, vectors[h].astype(np.float32).tobytes()) for h in sorted(vectors)]
        with self._pool.connection() as conn:
            # A cache: a vector lost to a crash of the database is embedded again, so the commit
            # need not wait for the disk. (Deletes, which erasure relies on, do wait.)
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.cursor().executemany(
                "INSERT INTO embedding_cache VALUES (%s, %s, %s, %s) ON CONFLICT (owner, model_id, text_hash) "
                "DO UPDATE SET vector = excluded.vector", rows)

    def delete(self, hashes: Collection[str]) -> None:
        if not hashes:
            return
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM embedding_cache WHERE owner = %s AND text_hash = ANY(%s)",
                         (self.owner, sorted(hashes)))


def postgres_embedding_caches(pool: Any) -> Any:
    """The table made (once); a function from a person's key to their cache, for `MemoryService`."""
    create_schema(pool, "memory.embedding_cache", _SCHEMA)
    return lambda owner_key: PostgresEmbeddingCache(pool, owner_key)
