"""The embedding cache behind its Protocol, on both backends: the `embedding_cache` table of a real
projections file, and the table replicas share on the suite's real PostgreSQL. Then the service on
the shared one: a cold replica rebuilding a person embeds nothing another already did, and
forgetting a memory deletes its vectors from PostgreSQL."""

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from memory.commands import StoreMemory, UpdateMemory
from memory.identity import Identity
from memory.pgpool import open_pool
from memory.service import Caller, MemoryService
from projections.base import open_projection_db
from projections.embedder import Embedder
from projections.embedding_cache import EmbeddingCache, SqliteEmbeddingCache
from projections.embeddings import EmbeddingsProjection, text_hash
from projections.pg_embedding_cache import postgres_embedding_caches

ALICE = Caller(Identity("local", "alice"), "cli", "req-1")
BOB = Caller(Identity("local", "bob"), "cli", "req-2")


def _vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture()
def pool(postgres_url: str) -> Iterator[object]:
    opened = open_pool(postgres_url)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgres"])
def cache(request, tmp_path: Path, embedder) -> Iterator[EmbeddingCache]:
    if request.param == "postgres":
        yield postgres_embedding_caches(request.getfixturevalue("pool"))("alice-key")
        return
    db = open_projection_db(tmp_path / "projections.sqlite")
    EmbeddingsProjection(embedder).create(db)
    yield SqliteEmbeddingCache(db)
    db.close()


def test_vectors_are_kept_by_model_and_text_hash_and_deleted_for_every_model(cache: EmbeddingCache):
    cache.put("model-a", {"h1": _vector(1), "h2": _vector(2)})
    cache.put("model-b", {"h1": _vector(3)})
    cache.put("model-a", {"h2": _vector(4)})  # replaced

    found = cache.get("model-a", {"h1", "h2", "h3"})
    assert found.keys() == {"h1", "h2"} and found["h1"].dtype == np.float32
    assert np.array_equal(found["h1"], _vector(1)) and np.array_equal(found["h2"], _vector(4))
    assert np.array_equal(cache.get("model-b", ["h1"])["h1"], _vector(3))
    assert cache.get("model-c", ["h1"]) == {} and cache.get("model-a", []) == {}

    cache.delete(["h1"])

    assert cache.get("model-a", {"h1", "h2"}).keys() == {"h2"} and cache.get("model-b", {"h1"}) == {}


def test_many_hashes_are_read_in_chunks(cache: EmbeddingCache):
    vectors = {f"h{i:04d}": _vector(i) for i in range(1200)}
    cache.put("m", vectors)
    assert cache.get("m", vectors).keys() == vectors.keys()


def test_each_person_has_a_cache_of_their_own_in_the_shared_table(pool):
    caches = postgres_embedding_caches(pool)
    alice, bob = caches("alice-key"), caches("bob-key")
    alice.put("m", {"same-text": _vector(1)})
    bob.put("m", {"same-text": _vector(1)})

    alice.delete(["same-text"])

    assert alice.get("m", ["same-text"]) == {} and bob.get("m", ["same-text"]).keys() == {"same-text"}


class CountingEmbedder:
    """The real model, counting the texts it is asked to embed."""

    def __init__(self, model: Embedder):
        self.model = model
        self.model_id = model.model_id
        self.dimensions = model.dimensions
        self.embedded: list[str] = []

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return self.model.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.model.embed_query(text)


def _rows(pool, owner: str) -> dict[str, bytes]:
    with pool.connection() as conn:
        return {h: bytes(v) for h, v in conn.execute(
            "SELECT text_hash, vector FROM embedding_cache WHERE owner = %s", (owner,))}


def test_a_cold_replica_embeds_nothing_another_did_and_forgetting_deletes_the_vectors(tmp_path, embedder, pool):
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_model = CountingEmbedder(embedder)
    first = MemoryService(first_dir, first_model, embedding_caches=postgres_embedding_caches(pool))
    kept = first.store(ALICE, StoreMemory(text="Alice keeps her bees on the roof of the library"))
    secret = first.store(ALICE, StoreMemory(text="The spare key hides under the red flowerpot"))
    first.update(ALICE, secret.id, UpdateMemory(text="The spare key hides under the green flowerpot"))
    first.store(BOB, StoreMemory(text="Alice keeps her bees on the roof of the library"))
    first.close()
    assert len(first_model.embedded) >= 4
    owner = ALICE.identity.key
    assert {text_hash(t) for t in ("Alice keeps her bees on the roof of the library",
                                   "The spare key hides under the red flowerpot",
                                   "The spare key hides under the green flowerpot")} <= _rows(pool, owner).keys()

    # Another replica, the same logs (copied here until logs live in PostgreSQL), no projections yet.
    shutil.copytree(first_dir, second_dir)
    for projections in second_dir.glob("users/*/projections.sqlite*"):
        projections.unlink()
    second_model = CountingEmbedder(embedder)
    second = MemoryService(second_dir, second_model, embedding_caches=postgres_embedding_caches(pool))
    try:
        found = second.users.get(ALICE.identity).view.embeddings.index
        assert kept.id in found and secret.id in found
        assert second_model.embedded == []  # every vector came from the shared cache

        second.forget(ALICE, secret.id)

        left = _rows(pool, owner)
        assert text_hash("The spare key hides under the red flowerpot") not in left
        assert text_hash("The spare key hides under the green flowerpot") not in left
        assert text_hash("Alice keeps her bees on the roof of the library") in left
        assert text_hash("Alice keeps her bees on the roof of the library") in _rows(pool, BOB.identity.key)
        assert not any(b"flowerpot" in v for v in left.values())
    finally:
        second.close()


def test_a_data_directory_that_moves_to_the_shared_cache_keeps_every_vector_without_the_model(tmp_path, embedder,
                                                                                              pool):
    before = MemoryService(tmp_path, embedder)  # SQLite: the vectors are in the projections file
    ids = [before.store(ALICE, StoreMemory(text=f"Moved memory number {i} about {word}")).id
           for i, word in enumerate(("otters", "kettles", "lanterns"))]
    before.close()

    model = CountingEmbedder(embedder)
    after = MemoryService(tmp_path, model, embedding_caches=postgres_embedding_caches(pool))
    try:
        index = after.users.get(ALICE.identity).view.embeddings.index
        assert all(memory_id in index for memory_id in ids) and model.embedded == []
        assert len(_rows(pool, ALICE.identity.key)) == 3  # copied into the shared cache, once
    finally:
        after.close()
