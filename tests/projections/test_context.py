"""Conversation context in the full-text index (each memory indexed with its predecessor's text),
the query cues ranking reads (dates, "when", names), and what they do to retrieve_context."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import msgspec
import pytest

from memory.commands import MemoryFilter, RetrieveQuery, StoreMemory
from memory.events import EventPayload, MemoryDeleted, MemoryForgotten, MemoryStored, MemoryUpdated
from memory.identity import Actor, Identity
from memory.ids import new_uuid7
from memory.log import LOG_FILE, EventDraft, SqliteEventLog
from memory.model import MemoryType, Scope
from memory.service import Caller, MemoryService
from memory.signing import KeyRing
from projections.base import ProjectionSet, open_projection_db
from projections.fulltext import FullTextProjection, neighbours
from projections.memories import MemoriesProjection
from projections.query import analyse, date_windows, mentions_time
from projections.ranking import DEFAULT_CONFIG, RankingConfig, rank_memories

OWNER = Identity("local", "unit")
ALICE = Caller(Identity("local", "alice"), "cli")


@pytest.fixture
def log(tmp_path):
    events = SqliteEventLog(tmp_path / LOG_FILE, OWNER, KeyRing(tmp_path))
    yield events
    events.close()


def append(log: SqliteEventLog, *payloads: EventPayload, client: str | None = "cli", redact=()) -> None:
    log.append_events([EventDraft(event_id=p.memory_id if isinstance(p, MemoryStored) else new_uuid7(),
                                  payload=p, actor=Actor("unit", client)) for p in payloads], redact_seqs=redact)


def stored(text: str, at: str | None = "2026-03-01T10:00:00.000000Z") -> MemoryStored:
    return MemoryStored(memory_id=new_uuid7(), text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL,
                        occurred_at=at)


def forget(log: SqliteEventLog, memory_id: str) -> None:
    seqs = [e.seq for e in log.read_events() if e.payload is not None
            and getattr(e.payload, "memory_id", None) == memory_id
            and e.type in ("memory.stored", "memory.updated", "memory.deleted")]
    append(log, MemoryForgotten(memory_id=memory_id, redacted_seqs=seqs), redact=seqs)


def project(log: SqliteEventLog) -> ProjectionSet:
    ps = ProjectionSet(open_projection_db(":memory:"), [MemoriesProjection(), FullTextProjection()])
    ps.catch_up(log)
    return ps


def context(db: sqlite3.Connection, memory: MemoryStored) -> str:
    return db.execute("SELECT context FROM memories_fts WHERE memory_id = ?", (memory.memory_id,)).fetchone()[0]


# -- what is indexed as context ---------------------------------------------------------------


def test_a_memory_is_indexed_with_the_text_stored_just_before_it(log):
    question, answer = stored("Alice: how was the coconut ice cream?"), stored("Bob: super good, rich and creamy")
    append(log, question, answer)
    db = project(log).db
    assert context(db, question) == ""
    assert context(db, answer) == question.text
    assert neighbours(db, [question.memory_id]) == [(question.memory_id, answer.memory_id)]
    # the reply is found by the question's words, through its context column only
    found = [r[0] for r in db.execute("SELECT memory_id FROM memories_fts WHERE memories_fts MATCH 'coconut'")]
    assert sorted(found) == sorted([question.memory_id, answer.memory_id])


@pytest.mark.parametrize(("first_at", "second_at", "linked"), [
    ("2026-03-01T10:00:00Z", "2026-03-01T10:29:00Z", True),
    ("2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z", False),  # another conversation
    ("2026-03-02T10:00:00Z", "2026-03-01T10:00:00Z", False),  # backfilled from another day
])
def test_only_a_memory_close_in_time_is_context(log, first_at, second_at, linked):
    first, second = stored("first", first_at), stored("second", second_at)
    append(log, first, second)
    assert context(project(log).db, second) == ("first" if linked else "")


def test_another_client_s_memory_is_not_context(log):
    first, second, third = stored("from the desktop"), stored("from the web"), stored("desktop again")
    append(log, first)
    append(log, second, client="web")
    append(log, third)
    db = project(log).db
    assert context(db, second) == ""
    assert context(db, third) == "from the desktop"


def test_editing_deleting_or_moving_a_memory_reindexes_its_successor(log):
    a, b, c = stored("alpha"), stored("bravo"), stored("charlie")
    append(log, a, b, c)
    append(log, MemoryUpdated(memory_id=b.memory_id, text="bravo two"))
    assert context(project(log).db, c) == "bravo two"
    append(log, MemoryDeleted(memory_id=b.memory_id))
    assert context(project(log).db, c) == "alpha"
    append(log, MemoryUpdated(memory_id=c.memory_id, occurred_at="2026-05-01T00:00:00.000000Z"))
    assert context(project(log).db, c) == ""


def test_a_forgotten_memory_leaves_no_word_in_its_successor_s_row(log, tmp_path):
    a, secret, c = stored("alpha"), stored("zanzibar flowerpot"), stored("charlie")
    append(log, a, secret, c)
    path = tmp_path / "projections.sqlite"
    ps = ProjectionSet(open_projection_db(path), [MemoriesProjection(), FullTextProjection()])
    ps.catch_up(log)
    assert context(ps.db, c) == "zanzibar flowerpot"
    forget(log, secret.memory_id)
    ps.catch_up(log)
    assert context(ps.db, c) == "alpha"
    assert ps.db.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'zanzibar'").fetchone() == (0,)
    ps.db.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, memories_fts, row)")
    terms = {t for (t,) in ps.db.execute("SELECT term FROM temp.vocab")}
    assert terms and not {"zanzibar", "flowerpot"} & terms
    # and the state is the one a replay of the redacted log builds
    assert ps.snapshot() == project(log).snapshot()


# -- query cues -------------------------------------------------------------------------------


def _day(y, m, d):
    return datetime(y, m, d, tzinfo=UTC)


@pytest.mark.parametrize(("text", "windows"), [
    ("What did Maria do on 31 July, 2023?", [(_day(2023, 7, 31), _day(2023, 8, 1))]),
    ("dinner on May 3, 2023", [(_day(2023, 5, 3), _day(2023, 5, 4))]),
    ("the book she finished on 8th December, 2023", [(_day(2023, 12, 8), _day(2023, 12, 9))]),
    ("what happened in June 2023", [(_day(2023, 6, 1), _day(2023, 7, 1))]),
    ("notes from 2024-02-29", [(_day(2024, 2, 29), _day(2024, 3, 1))]),
    ("an event in December 2023", [(_day(2023, 12, 1), _day(2024, 1, 1))]),
    ("anything in 2022?", [(_day(2022, 1, 1), _day(2023, 1, 1))]),
    ("it costs 2023 dollars", []),
    ("on 30 February, 2023", [(_day(2023, 2, 1), _day(2023, 3, 1))]),  # no such day: the month
    ("the meeting at 10 am", []),
])
def test_dates_named_in_a_query_become_windows(text, windows):
    assert date_windows(text) == windows


def test_a_when_question_and_time_in_a_memory_are_recognised():
    assert analyse("When did Caroline go to the support group?").asks_when
    assert analyse("what year did she move?").asks_when
    assert not analyse("Where did Caroline go?").asks_when
    assert mentions_time("I went to a support group yesterday")
    assert mentions_time("we moved here 4 years ago")
    assert mentions_time("see you next Friday")
    assert not mentions_time("the support group was powerful")


# -- what ranking does with them ------------------------------------------------------------


@pytest.fixture
def svc(data_dir, embedder):
    service = MemoryService(data_dir, embedder)
    yield service
    service.close()


def test_a_reply_is_found_by_the_words_of_the_question_it_answers(svc):
    for text, day in (("Bob: I adopted a puppy last month", 1), ("Alice: that's lovely, what breed?", 1),
                      ("Bob: a beagle, very energetic", 1), ("Alice: I finally finished my screenplay", 8),
                      ("Bob: congratulations, that is huge", 8), ("Alice: where did you go on your road trip?", 15),
                      ("Bob: Woodhaven, a small town in the Midwest", 15), ("Alice: sounds nice", 15)):
        memory = svc.store(ALICE, StoreMemory(text=text, occurred_at=f"2026-03-{day:02d}T10:00:00Z"))
        if text.startswith("Bob: Woodhaven"):
            reply = memory
    query = "Where did Bob go on his road trip?"
    store = svc.users.get(ALICE.identity)
    store.catch_up_embeddings()  # as retrieve_context does before ranking
    view = store.view
    vector = svc.embedder.embed_query(query)

    def rank(config: RankingConfig) -> int:
        ranked = rank_memories(view.db, view.embeddings.index, query, vector, MemoryFilter(), 10, 0.0,
                               datetime.now(UTC), config)
        return [r.memory_id for r in ranked].index(reply.id)

    def share(config: RankingConfig) -> float:
        """The reply's score over the best score."""
        ranked = rank_memories(view.db, view.embeddings.index, query, vector, MemoryFilter(), 10, 0.0,
                               datetime.now(UTC), config)
        return next(r.score for r in ranked if r.memory_id == reply.id) / ranked[0].score

    # Without the subject rule ("Bob" names the reply's speaker), so that only the context is measured.
    plain = msgspec.structs.replace(DEFAULT_CONFIG, subject_factor=1.0)
    alone = msgspec.structs.replace(plain, context_column=0.0, from_predecessor=0.0, from_successor=0.0)
    assert rank(DEFAULT_CONFIG) == 0
    assert share(plain) > share(alone) + 0.03
    assert svc.retrieve_context(ALICE, RetrieveQuery(query=query)).memories[0].memory.id == reply.id


def test_a_date_in_the_query_prefers_what_happened_then(svc):
    may = svc.store(ALICE, StoreMemory(text="went hiking with the kids", occurred_at="2023-05-03T15:00:00Z"))
    svc.store(ALICE, StoreMemory(text="went hiking in the mountains", occurred_at="2023-08-20T15:00:00Z"))
    # Other memories, as any real log has: each list is standardised over its candidates, and two
    # candidates alone are always one standard deviation either side of their mean.
    for i, text in enumerate(("bought a new bike", "the dentist appointment moved", "baked bread with Sam",
                              "the car needs new tyres")):
        svc.store(ALICE, StoreMemory(text=text, occurred_at=f"2023-0{6 + i % 3}-1{i}T15:00:00Z"))
    found = svc.retrieve_context(ALICE, RetrieveQuery(query="Where did I go hiking on 3 May 2023?",
                                                      recency_weight=0.0)).memories
    assert found[0].memory.id == may.id


def test_a_name_in_the_query_prefers_that_person_s_memories(svc):
    svc.store(ALICE, StoreMemory(text="Alice: I painted a sunset last weekend"))
    bob = svc.store(ALICE, StoreMemory(text="Bob: I painted a lake last weekend"))
    found = svc.retrieve_context(ALICE, RetrieveQuery(query="What did Bob paint?", recency_weight=0.0)).memories
    assert found[0].memory.id == bob.id
