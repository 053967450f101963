"""Where the embeddings projection keeps the vectors it has computed, by (model id, text hash), so a
rebuild, a past view or another replica never pays the model for a text again.

Two implementations: `SqliteEmbeddingCache`, the `embedding_cache` table inside a person's
projections file (the default: written in the same transaction as the projection), and
`projections.pg_embedding_cache.PostgresEmbeddingCache`, one table every replica shares. Forgetting
a memory deletes its texts' vectors from whichever is in use (`delete`).
"""

import sqlite3
from collections.abc import Collection, Mapping
from typing import Protocol

import numpy as np

__all__ = ["EmbeddingCache", "SqliteEmbeddingCache"]

# Bound parameters per query: well under SQLite's limit, and a round trip's worth for PostgreSQL.
CHUNK = 500


class EmbeddingCache(Protocol):
    def get(self, model_id: str, hashes: Collection[str]) -> dict[str, np.ndarray]:
        """The cached vectors of these text hashes (those there are), as float32."""
        ...

    def put(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Keep these vectors (a hash already there is replaced)."""
        ...

    def delete(self, hashes: Collection[str]) -> None:
        """Forget these texts' vectors, of every model."""
        ...


class SqliteEmbeddingCache:
    """The `embedding_cache` table of a projections file, through the caller's connection (so a
    write joins the caller's transaction)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def get(self, model_id: str, hashes: Collection[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        ordered = sorted(hashes)
        for i in range(0, len(ordered), CHUNK):
            chunk = ordered[i : i + CHUNK]
            rows = self.db.execute(
                f"SELECT text_hash, vector FROM embedding_cache WHERE model_id = ? "
                f"AND text_hash IN ({', '.join('?' * len(chunk))})", (model_id, *chunk))
            found.update((h, np.frombuffer(v, dtype=np.float32)) for h, v in rows)
        return found

    def put(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO embedding_cache VALUES (?, ?, ?)",
                            [(model_id, h, v.astype(np.float32).tobytes()) for h, v in vectors.items()])

    def delete(self, hashes: Collection[str]) -> None:
        self.db.executemany("DELETE FROM embedding_cache WHERE text_hash = ?", [(h,) for h in hashes])
