"""Fusion of the two halves, the confidence scale of the relevance floor, and the rules that keep
LoCoMo's shape out of other data: unit tests on the pure functions, then through MemoryService
with the real model."""

from __future__ import annotations

import pytest

from memory.commands import RetrieveQuery, StoreMemory
from memory.identity import Identity
from memory.service import Caller, MemoryService
from projections.fusion import confidence, coverage, fuse, unknown_names
from projections.query import speaker
from projections.ranking import DEFAULT_CONFIG

ALICE = Caller(Identity("local", "alice"), "cli")


def test_a_flat_list_adds_little_and_a_sharp_one_decides():
    # BM25 matched one incidental word in many memories (flat), the dense half found one memory.
    bm25 = {f"m{i}": 5.0 + 0.01 * i for i in range(20)}
    dense = {f"m{i}": 0.10 for i in range(20)} | {"m3": 0.60}
    fused = fuse(bm25, dense, 1.0, 1.0)
    assert max(fused, key=fused.get) == "m3"
    # Min-max, the old rule, lets the flat list's top (m19) win.
    old = fuse(bm25, dense, 0.6, 0.4, "minmax")
    assert max(old, key=old.get) == "m19"


def test_fused_relevance_is_in_zero_to_one_and_a_memory_in_one_list_only_is_kept():
    fused = fuse({"a": 3.0, "b": 1.0}, {"b": 0.5, "c": 0.4}, 1.0, 1.0)
    assert set(fused) == {"a", "b", "c"}
    assert min(fused.values()) == 0.0 and max(fused.values()) == 1.0


def test_coverage_is_the_share_of_the_query_idf_a_memory_holds():
    counts = {"rust": 1, "favourite": 1}
    total = 100
    idf = 2 * __import__("math").log((100 - 1 + 0.5) / 1.5)
    assert coverage({"m": idf}, counts, total)["m"] == pytest.approx(1.0)
    assert coverage({"m": idf / 2}, counts, total)["m"] == pytest.approx(0.5)


@pytest.mark.parametrize(("query", "counts", "expected"), [
    ("What did Caroline research?", {"caroline": 0, "research": 3}, ["Caroline"]),
    ("What did Caroline research?", {"caroline": 12, "research": 3}, []),  # a known name
    ("Where should I stay in Kyoto?", {"stay": 0, "kyoto": 0}, []),  # a place it is set in
    ("When did she go camping in June?", {"june": 0}, []),  # a month
    ("What is the Atlas staging URL?", {"atlas": 4, "staging": 1, "url": 0}, []),  # an acronym
    ("Caroline went where?", {"caroline": 0}, []),  # the first word is capitalised anyway
])
def test_unknown_names_are_capitalised_words_inside_the_query_no_memory_contains(query, counts, expected):
    assert unknown_names(query, counts) == expected


def test_confidence_is_the_best_absolute_score_less_the_unknown_name_penalty():
    cov, dense = {"a": 0.8}, {"a": 0.5, "b": 0.6}
    assert confidence(cov, dense, 0.5, False, 0.2) == pytest.approx(0.9)
    assert confidence(cov, dense, 0.5, True, 0.2) == pytest.approx(0.7)
    assert confidence({}, {}, 0.5, False, 0.2) == 0.0


def test_only_an_utterance_has_a_speaker():
    assert speaker("Caroline: I went to a support group") == "caroline"
    assert speaker("User prefers black coffee") is None


# -- through the service, with the real model ------------------------------------------------


@pytest.fixture
def svc(data_dir, embedder):
    service = MemoryService(data_dir, embedder)
    for text in ("I take my coffee black, no sugar", "I dislike virtual reality games, they make me nauseous",
                 "My sister Ana lives in Madrid", "The deploy pipeline runs on Kubernetes",
                 "I always pick the aisle seat on planes", "Our standup is at 9:30 every weekday"):
        service.store(ALICE, StoreMemory(text=text, memory_type="core_identity"))
    yield service
    service.close()


def retrieve(svc: MemoryService, query: str, **fields) -> list[tuple[str, float]]:
    result = svc.retrieve_context(ALICE, RetrieveQuery(query=query, recency_weight=0.0, **fields))
    return [(r.memory.text, r.score) for r in result.memories]


def test_a_query_about_nothing_stored_finds_nothing(svc):
    assert DEFAULT_CONFIG.floor > 0
    assert retrieve(svc, "What did Priyanka say about her thesis defence?") == []


def test_min_score_zero_returns_the_closest_memories_anyway(svc):
    found = retrieve(svc, "What did Priyanka say about her thesis defence?", min_score=0.0, limit=4)
    assert len(found) == 4
    assert all(score < DEFAULT_CONFIG.floor for _, score in found)


def test_a_relevant_query_still_finds_its_memory_first_above_the_floor(svc):
    (text, score), *_ = retrieve(svc, "Suggest some immersive games for me")
    assert text.startswith("I dislike virtual reality games")
    assert score >= DEFAULT_CONFIG.floor


def test_a_high_min_score_leaves_out_what_the_floor_lets_through(svc):
    assert retrieve(svc, "how do I take my coffee")
    assert retrieve(svc, "how do I take my coffee", min_score=5.0) == []
