"""The query-vector cache: a repeated query skips the model, entries are per person and model,
bounded, read-only, and erasure leaves none of the person's queries behind."""

from __future__ import annotations

import numpy as np
import pytest

from memory.commands import RetrieveQuery, StoreMemory
from memory.identity import Identity
from memory.service import Caller, MemoryService
from projections.query_vectors import QueryVectorCache

ALICE = Caller(Identity("local", "alice"), "cli")
BOB = Caller(Identity("local", "bob"), "cli")


class CountingEmbedder:
    """The real model, with a count of its query calls."""

    def __init__(self, real):
        self.real = real
        self.model_id = real.model_id
        self.dimensions = real.dimensions
        self.queries: list[str] = []

    def embed_documents(self, texts):
        return self.real.embed_documents(texts)

    def embed_query(self, text):
        self.queries.append(text)
        return self.real.embed_query(text)


def test_a_repeated_query_is_answered_from_the_cache_with_the_models_vector(embedder):
    counting = CountingEmbedder(embedder)
    cache = QueryVectorCache(counting)
    first = cache.vector("alice", "where do I keep my passport")
    again = cache.vector("alice", "where do I keep my passport")
    assert counting.queries == ["where do I keep my passport"]
    assert again is first
    np.testing.assert_allclose(first, embedder.embed_query("where do I keep my passport"), atol=1e-6)
    with pytest.raises(ValueError):
        first[0] = 2.0  # shared between callers: read-only


def test_entries_are_per_owner_and_per_model(embedder):
    counting = CountingEmbedder(embedder)
    cache = QueryVectorCache(counting)
    cache.vector("alice", "coffee")
    cache.vector("bob", "coffee")
    assert counting.queries == ["coffee", "coffee"]
    counting.model_id = "another-model:123"
    cache.vector("alice", "coffee")
    assert counting.queries == ["coffee"] * 3


def test_the_least_recently_used_entry_leaves_first(embedder):
    counting = CountingEmbedder(embedder)
    cache = QueryVectorCache(counting, capacity=2)
    cache.vector("alice", "one")
    cache.vector("alice", "two")
    cache.vector("alice", "one")  # now the most recent
    cache.vector("alice", "three")  # evicts "two"
    assert len(cache) == 2
    cache.vector("alice", "one")
    cache.vector("alice", "two")
    assert counting.queries == ["one", "two", "three", "two"]
    assert len(QueryVectorCache(counting, capacity=0)) == 0
    with pytest.raises(ValueError):
        QueryVectorCache(counting, capacity=-1)


def test_forget_drops_every_cached_query_of_that_person_and_only_theirs(data_dir, embedder):
    service = MemoryService(data_dir, embedder)
    try:
        secret = service.store(ALICE, StoreMemory(text="My locker code is 4417")).id
        service.store(BOB, StoreMemory(text="Bob likes sailing"))
        assert service.retrieve_context(ALICE, RetrieveQuery(query="locker code 4417")).memories[0].memory.id == secret
        service.retrieve_context(BOB, RetrieveQuery(query="sailing"))
        cached = [key for key in service.query_vectors._entries]
        assert any(text == "locker code 4417" for _, _, text in cached)

        service.forget(ALICE, secret)

        left = list(service.query_vectors._entries)
        assert not any("4417" in text for _, _, text in left)
        assert [text for owner, _, text in left] == ["sailing"]  # Bob's stays
        # and a retrieval afterwards embeds afresh and finds nothing of the forgotten memory
        again = service.retrieve_context(ALICE, RetrieveQuery(query="locker code 4417"))
        assert secret not in [r.memory.id for r in again.memories]
    finally:
        service.close()
