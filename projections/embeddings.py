"""Embeddings of memory texts, with a cache keyed by (model id, text hash).

The cache (`projections.embedding_cache`: a table of the projections file, or one PostgreSQL table
every replica shares) survives rebuilds, so replaying a log does not embed unchanged text again; it
holds vectors, not text, and forgetting a memory deletes its vector. Vectors also live in a
`VectorIndex` in memory, published only after the batch that produced them commits.
"""

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from memory.events import MemoryDeleted, MemoryForgotten, MemoryRestored, MemoryStored, MemoryUpdated
from memory.log import StoredEvent
from projections.base import execute_script
from projections.embedder import Embedder
from projections.embedding_cache import EmbeddingCache, SqliteEmbeddingCache
from projections.vectors import VectorIndex

__all__ = ["EmbeddingsProjection", "text_hash", "create_cache"]

# Vectors computed ahead of their event (`prime`); a few calls' worth, in case one never lands.
_MAX_PRIMED = 256


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def create_cache(db: sqlite3.Connection) -> None:
    """The vector cache table (in a projection file; several workers share the first one's)."""
    db.execute("CREATE TABLE IF NOT EXISTS embedding_cache (model_id TEXT NOT NULL, text_hash TEXT NOT NULL, "
               "vector BLOB NOT NULL, PRIMARY KEY (model_id, text_hash)) WITHOUT ROWID")


class EmbeddingsProjection:
    name = "embeddings"

    def __init__(self, embedder: Embedder, cache: EmbeddingCache | None = None):
        """`cache` holds the vectors when they are not kept beside the projection, in its own
        file's table: a point-in-time view in memory borrows the user's cache on disk, and replicas
        share one in PostgreSQL."""
        self.embedder = embedder
        self.index = VectorIndex(embedder.dimensions)
        self.cache = cache
        self._pending: list[tuple[str, np.ndarray | None]] = []
        self._primed: OrderedDict[str, np.ndarray] = OrderedDict()
        self._primed_lock = threading.Lock()

    @property
    def version(self) -> str:
        return f"2:{self.embedder.model_id}"

    def create(self, db: sqlite3.Connection) -> None:
        execute_script(db, 
            """
            CREATE TABLE IF NOT EXISTS embeddings (memory_id TEXT PRIMARY KEY, text_hash TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS embeddings_by_hash ON embeddings(text_hash);
            CREATE TABLE IF NOT EXISTS embedded_texts (
                memory_id TEXT NOT NULL, text_hash TEXT NOT NULL, PRIMARY KEY (memory_id, text_hash)
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS embedded_texts_by_hash ON embedded_texts(text_hash);
            """
        )
        create_cache(db)

    def drop(self, db: sqlite3.Connection) -> None:
        db.execute("DROP TABLE IF EXISTS embeddings")
        db.execute("DROP TABLE IF EXISTS embedded_texts")
        self._pending.append(("", None))  # "" marks "clear the index" for after_commit

    def prime(self, texts: Sequence[str]) -> None:
        """Embed texts that events about to be applied will carry; `apply` takes them from here
        instead of calling the model. Safe to call without the caller's lock."""
        with self._primed_lock:
            # A store embeds its text before it is appended (the duplicate check needs it): the
            # catch-up that follows must not pay for the model again.
            texts = list(dict.fromkeys(t for t in texts if text_hash(t) not in self._primed))
        if not texts:
            return
        vectors = self.embedder.embed_documents(list(texts))
        with self._primed_lock:
            for text, vector in zip(texts, vectors, strict=True):
                self._primed[text_hash(text)] = vector
            while len(self._primed) > _MAX_PRIMED:
                self._primed.popitem(last=False)

    def prime_vectors(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Vectors the caller computed for texts about to be appended (an import): kept whatever
        their number, for the catch-up that follows; the next `prime` trims them again."""
        with self._primed_lock:
            for text, vector in zip(texts, vectors, strict=True):
                self._primed[text_hash(text)] = vector

    def vector_for(self, db: sqlite3.Connection, text: str) -> np.ndarray:
        """The text's vector: from the cache when a memory already had this text, else from the
        model, primed so that the event carrying the text does not embed it again. `db` is a
        connection of the caller's (this runs outside the user's lock)."""
        digest = text_hash(text)
        with self._primed_lock:
            primed = self._primed.get(digest)
        if primed is not None:
            return primed
        cached = self._cache_for(db).get(self.embedder.model_id, {digest}).get(digest)
        if cached is not None:
            return cached
        self.prime([text])
        with self._primed_lock:
            found = self._primed.get(digest)
        return found if found is not None else self.embedder.embed_documents([text])[0]

    def uncached(self, db: sqlite3.Connection, texts: Sequence[str]) -> list[str]:
        """The texts whose vector is not in the cache yet (another worker may have embedded the
        others already). `db` is a connection of the caller's, as for `vector_for`."""
        found = self._cache_for(db).get(self.embedder.model_id, {text_hash(t) for t in texts})
        return [t for t in texts if text_hash(t) not in found]

    def _take_primed(self, hashes: set[str]) -> dict[str, np.ndarray]:
        with self._primed_lock:
            return {h: self._primed.pop(h) for h in hashes if h in self._primed}

    def load_index(self, db: sqlite3.Connection) -> None:
        """Fill the in-memory index from the table (once, when a user's projections open)."""
        self.index.clear()
        if self.cache is None:
            # Streamed row by row into a matrix sized up front: collecting 100k vectors first
            # left ~230 MB of freed heap that the process never gave back.
            count = db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            rows = db.execute(
                "SELECT e.memory_id, c.vector FROM embeddings e JOIN embedding_cache c "
                "ON c.model_id = ? AND c.text_hash = e.text_hash", (self.embedder.model_id,))
            self.index.load(((m, np.frombuffer(v, dtype=np.float32)) for m, v in rows), capacity=count)
        else:
            rows = db.execute("SELECT memory_id, text_hash FROM embeddings").fetchall()
            vectors = self.cache.get(self.embedder.model_id, {h for _, h in rows})
            missing = [(m, h) for m, h in rows if h not in vectors]
            if missing:
                vectors.update(self._backfill(db, missing))
            self.index.load(((m, vectors[h]) for m, h in rows if h in vectors), capacity=len(rows))

    def _backfill(self, db: sqlite3.Connection, missing: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        """Vectors the cache in use lacks for memories the projection has: projections made before
        the cache moved (a data directory that starts using PostgreSQL keeps its files). They come
        from the file's own table, else the model, and go into the cache, once."""
        model = self.embedder.model_id
        found = SqliteEmbeddingCache(db).get(model, {h for _, h in missing})
        texts: dict[str, str] = {}
        for memory_id, digest in missing:
            if digest not in found and digest not in texts:
                row = db.execute("SELECT text FROM memories WHERE id = ?", (memory_id,)).fetchone()
                if row is not None and text_hash(row[0]) == digest:
                    texts[digest] = row[0]
        if texts:
            found.update(zip(texts, self.embedder.embed_documents(list(texts.values())), strict=True))
        if found:
            self.cache.put(model, found)
        return found

    def apply(self, db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
        cache = self._cache_for(db)
        wanted: dict[str, str] = {}  # memory_id -> text, in event order, last write wins
        seen: set[str] = set()  # the hash of every text in the batch
        for event in events:
            match event.payload:
                case MemoryStored(memory_id=memory_id, text=text) | MemoryUpdated(memory_id=memory_id, text=str() as text):
                    wanted[memory_id] = text
                    seen.add(text_hash(text))
                    # Every text, not only the last of the batch: batching must not change the result.
                    db.execute("INSERT OR IGNORE INTO embedded_texts VALUES (?, ?)", (memory_id, text_hash(text)))
                case MemoryRestored(memory_id=memory_id):
                    # The text as the memories projection has it (a later event of the batch that
                    # changes or removes it comes after this one and wins, as it should).
                    row = db.execute("SELECT text FROM memories WHERE id = ? AND deleted = 0", (memory_id,)).fetchone()
                    if row is not None:
                        wanted[memory_id] = row[0]
                        seen.add(text_hash(row[0]))
                        db.execute("INSERT OR IGNORE INTO embedded_texts VALUES (?, ?)", (memory_id, text_hash(row[0])))
                case MemoryDeleted(memory_id=memory_id) | MemoryForgotten(memory_id=memory_id):
                    wanted.pop(memory_id, None)
                    self._remove(db, cache, memory_id, forget=isinstance(event.payload, MemoryForgotten))
        # Vectors computed ahead (`prime`) are cached for every text of the batch, the ones
        # replaced within it included: a past view (`as_of`) needs them, and the model already paid.
        fresh = self._take_primed(seen)
        hashes = {memory_id: text_hash(text) for memory_id, text in wanted.items()}
        vectors = cache.get(self.embedder.model_id, set(hashes.values()) - fresh.keys())
        missing = {h: wanted[m] for m, h in hashes.items() if h not in vectors and h not in fresh}
        if missing:
            fresh.update(zip(missing, self.embedder.embed_documents(list(missing.values())), strict=True))
        # A text forgotten within the batch has no embedded_texts row left: its vector is not kept.
        kept = [h for h in fresh if h in missing or db.execute(
            "SELECT 1 FROM embedded_texts WHERE text_hash = ?", (h,)).fetchone()]
        if kept:
            cache.put(self.embedder.model_id, {h: fresh[h] for h in kept})
        vectors.update(fresh)
        db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?)", list(hashes.items()))
        self._pending.extend((m, vectors[h]) for m, h in hashes.items())

    def _remove(self, db: sqlite3.Connection, cache: EmbeddingCache, memory_id: str, forget: bool) -> None:
        db.execute("DELETE FROM embeddings WHERE memory_id = ?", (memory_id,))
        self._pending.append((memory_id, None))
        if not forget:
            return
        # Every text the memory ever had (before updates, before a soft delete) leaves the cache,
        # unless another memory still has the same text.
        hashes = [r[0] for r in db.execute("SELECT text_hash FROM embedded_texts WHERE memory_id = ?", (memory_id,))]
        db.execute("DELETE FROM embedded_texts WHERE memory_id = ?", (memory_id,))
        gone = [h for h in hashes if not db.execute("SELECT 1 FROM embedded_texts WHERE text_hash = ?", (h,)).fetchone()]
        if gone:
            cache.delete(gone)

    def _cache_for(self, db: sqlite3.Connection) -> EmbeddingCache:
        return self.cache if self.cache is not None else SqliteEmbeddingCache(db)

    def snapshot(self, db: sqlite3.Connection) -> list[tuple]:
        return (
            db.execute("SELECT memory_id, text_hash FROM embeddings ORDER BY memory_id").fetchall()
            + db.execute("SELECT * FROM embedded_texts ORDER BY memory_id, text_hash").fetchall()
        )

    def after_commit(self) -> None:
        for memory_id, vector in self._pending:
            if memory_id == "":
                self.index.clear()
            elif vector is None:
                self.index.remove(memory_id)
            else:
                self.index.upsert(memory_id, vector)
        self._pending.clear()

    def after_rollback(self) -> None:
        # The index may hold nothing of the failed batch (it is published after commit); the
        # caller reloads it from the table all the same (UserStore.catch_up).
        self._pending.clear()
