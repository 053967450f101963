"""Unit tests of the projections and of the machinery that keeps them caught up.

Events are appended to a real signed log (SqliteEventLog) and projected into an in-memory
database, one projection at a time where that is the point. Whole-store behaviour (a deleted or
corrupted projections.sqlite, the embedding cache on rebuild) goes through UserStore and
MemoryService with the real model.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.commands import RetrieveQuery, StoreMemory, UpdateMemory
from memory.events import (
    EntityRegistered,
    EventPayload,
    MemoriesLinked,
    MemoryDeleted,
    MemoryForgotten,
    MemoryStored,
    MemoryUpdated,
)
from memory.identity import Actor, Identity
from memory.ids import new_uuid7
from memory.log import LOG_FILE, USERS_DIR, EventDraft, SqliteEventLog, StoredEvent
from memory.model import LinkType, MemoryType, Scope
from memory.service import Caller, MemoryService
from memory.signing import KeyRing
from memory.userstore import build_projections
from projections.base import PROJECTIONS_FILE, ProjectionSet, open_projection_db
from projections.embeddings import EmbeddingsProjection
from projections.entities import EntitiesProjection
from projections.fulltext import FullTextProjection
from projections.links import LinksProjection
from projections.memories import MemoriesProjection
from projections.vectors import VectorIndex

OWNER = Identity("local", "unit")
ACTOR = Actor("unit", "cli")
ALICE = Caller(Identity("local", "alice"), "cli")
# Logs built per hypothesis example go to tmpfs when there is one: fsyncs are free there.
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def log(tmp_path):
    events = SqliteEventLog(tmp_path / LOG_FILE, OWNER, KeyRing(tmp_path))
    yield events
    events.close()


def append(log: SqliteEventLog, *payloads: EventPayload, redact: Sequence[int] = ()) -> list[StoredEvent]:
    drafts = [EventDraft(event_id=p.memory_id if isinstance(p, MemoryStored) else new_uuid7(), payload=p, actor=ACTOR)
              for p in payloads]
    return log.append_events(drafts, redact_seqs=redact)


def stored(text: str, entity: str | None = None, **fields) -> MemoryStored:
    return MemoryStored(memory_id=new_uuid7(), text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL,
                        entity=entity, **fields)


def forget(log: SqliteEventLog, memory_id: str) -> list[StoredEvent]:
    """What the service does: redact the memory's own events in the tombstone's append."""
    seqs = [e.seq for e in log.read_events() if e.payload is not None
            and getattr(e.payload, "memory_id", None) == memory_id
            and e.type in ("memory.stored", "memory.updated", "memory.deleted")]
    return append(log, MemoryForgotten(memory_id=memory_id, redacted_seqs=seqs), redact=seqs)


def projected(log: SqliteEventLog, *projections, one_at_a_time: bool = False) -> ProjectionSet:
    ps = ProjectionSet(open_projection_db(":memory:"), projections)
    if one_at_a_time:
        for seq in range(1, log.last_seq() + 1):
            ps.catch_up(log, to_seq=seq)
    else:
        ps.catch_up(log)
    return ps


def fts(db: sqlite3.Connection, query: str) -> list[str]:
    """Memories whose own text matches (other columns, like a neighbour's text as context, aside)."""
    return [r[0] for r in db.execute("SELECT memory_id FROM memories_fts WHERE memories_fts MATCH ? ORDER BY rowid",
                                     (f"text : ({query})",))]


def holds_exactly(index: VectorIndex, ids: set[str]) -> bool:
    return len(index) == len(ids) and all(i in index for i in ids)


def entities(db: sqlite3.Connection) -> dict[str, tuple]:
    """name -> (description, parent, registered, memory_count)"""
    return {r[0]: r[1:5] for r in db.execute("SELECT * FROM entities")}


class CountingEmbedder:
    """Delegates to the real model and counts the texts it was asked to embed."""

    def __init__(self, model):
        self.model = model
        self.model_id = model.model_id
        self.dimensions = model.dimensions
        self.embedded: list[str] = []

    def embed_documents(self, texts):
        self.embedded += list(texts)
        return self.model.embed_documents(texts)

    def embed_query(self, text):
        return self.model.embed_query(text)


# -- full text ------------------------------------------------------------------------------


def test_a_stored_memory_is_found_by_its_words_stemmed(log):
    memory = stored("The runners were running quickly through the park")
    other = stored("A quiet afternoon with tea")
    append(log, memory, other)
    db = projected(log, FullTextProjection()).db
    assert fts(db, "run") == [memory.memory_id]
    assert fts(db, "park") == [memory.memory_id]
    assert fts(db, "tea") == [other.memory_id]
    assert fts(db, "coffee") == []


def test_updating_the_text_replaces_the_indexed_words_under_the_same_rowid(log):
    memory = stored("the meeting is on monday")
    [first] = append(log, memory)
    append(log, MemoryUpdated(memory_id=memory.memory_id, text="the meeting moved to thursday"))
    db = projected(log, FullTextProjection()).db
    assert fts(db, "monday") == []
    assert fts(db, "thursday") == [memory.memory_id]
    assert db.execute("SELECT rowid, text FROM memories_fts").fetchall() == [(first.seq, "the meeting moved to thursday")]


def test_an_update_without_text_leaves_the_index_alone(log):
    memory = stored("the meeting is on monday")
    append(log, memory, MemoryUpdated(memory_id=memory.memory_id, tags=["x"], entity="acme"))
    assert fts(projected(log, FullTextProjection()).db, "monday") == [memory.memory_id]


def test_deleted_and_forgotten_memories_leave_the_index(log):
    deleted, forgotten, kept = stored("apples are red"), stored("apples are green"), stored("apples are sweet")
    append(log, deleted, forgotten, kept, MemoryDeleted(memory_id=deleted.memory_id))
    forget(log, forgotten.memory_id)
    db = projected(log, FullTextProjection()).db
    assert fts(db, "apples") == [kept.memory_id]
    assert fts(db, "green OR red") == []
    assert [r[0] for r in db.execute("SELECT memory_id FROM fulltext_rows")] == [kept.memory_id]


def test_updating_the_text_of_a_deleted_memory_does_not_index_it_again(log):
    memory = stored("apples are red")
    append(log, memory, MemoryDeleted(memory_id=memory.memory_id),
           MemoryUpdated(memory_id=memory.memory_id, text="pears are yellow"))
    db = projected(log, FullTextProjection()).db
    assert fts(db, "apples OR pears") == []


# -- entities -------------------------------------------------------------------------------


def test_a_dotted_entity_implies_its_ancestors(log):
    append(log, stored("the web team ships friday", entity="acme.marketing.web"))
    tree = entities(projected(log, EntitiesProjection()).db)
    assert tree == {
        "acme": (None, None, 0, 0),
        "acme.marketing": (None, "acme", 0, 0),
        "acme.marketing.web": (None, "acme.marketing", 0, 1),
    }


def test_entity_counts_follow_stores_updates_and_deletes(log):
    a, b, c = stored("one", entity="acme"), stored("two", entity="acme"), stored("three", entity="acme.sales")
    append(log, a, b, c)
    db_before = projected(log, EntitiesProjection()).db
    assert entities(db_before)["acme"][3] == 2 and entities(db_before)["acme.sales"][3] == 1
    append(log, MemoryUpdated(memory_id=a.memory_id, entity="beta"), MemoryDeleted(memory_id=b.memory_id),
           MemoryUpdated(memory_id=c.memory_id, entity=None))
    tree = entities(projected(log, EntitiesProjection()).db)
    assert tree == {"beta": (None, None, 0, 1)}


def test_first_and_last_seen_span_the_memories_of_an_entity(log):
    first = append(log, stored("one", entity="acme"))[0]
    append(log, stored("unrelated", entity="beta"))
    last = append(log, stored("two", entity="acme"))[0]
    row = projected(log, EntitiesProjection()).db.execute(
        "SELECT first_seen, last_seen FROM entities WHERE name = 'acme'").fetchone()
    assert row == (first.recorded_at, last.recorded_at)


def test_a_registered_entity_with_an_explicit_parent_creates_that_parent(log):
    append(log, EntityRegistered(name="website", description="the public site", parent="acme"))
    tree = entities(projected(log, EntitiesProjection()).db)
    assert tree == {"website": ("the public site", "acme", 1, 0), "acme": (None, None, 0, 0)}


def test_an_explicit_parent_overrides_the_dotted_one(log):
    append(log, EntityRegistered(name="acme.web", parent="beta"))
    tree = entities(projected(log, EntitiesProjection()).db)
    assert tree == {"acme.web": (None, "beta", 1, 0), "beta": (None, None, 0, 0)}


def test_a_registration_keeps_an_entity_whose_memories_are_gone(log):
    memory = stored("one", entity="acme.web")
    append(log, EntityRegistered(name="acme", description="client"), memory)
    append(log, MemoryDeleted(memory_id=memory.memory_id))
    tree = entities(projected(log, EntitiesProjection()).db)
    assert tree == {"acme": ("client", None, 1, 0)}


def test_a_sibling_keeps_the_shared_parent_when_one_branch_goes(log):
    web, sales = stored("one", entity="acme.web"), stored("two", entity="acme.sales")
    append(log, web, sales, MemoryDeleted(memory_id=web.memory_id))
    assert set(entities(projected(log, EntitiesProjection()).db)) == {"acme", "acme.sales"}


@pytest.mark.parametrize("cycle", [["a", "b"], ["a", "b", "c"], ["x.y", "x"]])
def test_a_cycle_of_explicit_parents_does_not_hang(log, cycle):
    registrations = [EntityRegistered(name=n, parent=cycle[(i + 1) % len(cycle)]) for i, n in enumerate(cycle)]
    memory = stored("inside the cycle", entity=cycle[0])
    append(log, *registrations)
    append(log, memory)
    append(log, MemoryDeleted(memory_id=memory.memory_id))
    done: list[ProjectionSet] = []
    for one_at_a_time in (False, True):
        worker = threading.Thread(target=lambda o=one_at_a_time: done.append(projected(log, EntitiesProjection(),
                                                                                       one_at_a_time=o)),
                                  daemon=True)
        worker.start()
        worker.join(10)
        assert not worker.is_alive(), "projecting a cycle of parents hangs"
    tree = entities(done[0].db)
    assert {n: v[1] for n, v in tree.items()} == {n: cycle[(i + 1) % len(cycle)] for i, n in enumerate(cycle)}
    assert tree == entities(done[1].db)


def test_re_registering_an_entity_under_another_parent_drops_the_old_parent(log):
    append(log, EntityRegistered(name="website", parent="oldco"))
    append(log, EntityRegistered(name="website", parent="newco"))
    incremental = entities(projected(log, EntitiesProjection(), one_at_a_time=True).db)
    assert incremental == entities(projected(log, EntitiesProjection()).db)
    assert "oldco" not in incremental


def test_registering_an_explicit_parent_for_a_dotted_entity_drops_the_implied_parent(log):
    append(log, stored("one", entity="acme.web"))
    append(log, EntityRegistered(name="acme.web", parent="beta"))
    incremental = entities(projected(log, EntitiesProjection(), one_at_a_time=True).db)
    assert incremental == entities(projected(log, EntitiesProjection()).db)
    assert "acme" not in incremental


# -- links ----------------------------------------------------------------------------------


def test_links_are_recorded_once_per_type(log):
    a, b = stored("one"), stored("two")
    append(log, a, b)
    [first] = append(log, MemoriesLinked(source_id=a.memory_id, target_id=b.memory_id, link_type=LinkType.SUPPORTS))
    append(log, MemoriesLinked(source_id=a.memory_id, target_id=b.memory_id, link_type=LinkType.SUPPORTS),
           MemoriesLinked(source_id=a.memory_id, target_id=b.memory_id, link_type=LinkType.REFINES),
           MemoriesLinked(source_id=b.memory_id, target_id=a.memory_id, link_type=LinkType.SUPPORTS))
    rows = projected(log, LinksProjection()).db.execute(
        "SELECT source_id, target_id, link_type, seq FROM links ORDER BY seq").fetchall()
    assert rows == [
        (a.memory_id, b.memory_id, "supports", first.seq),  # the repeat keeps the first seq
        (a.memory_id, b.memory_id, "refines", first.seq + 2),
        (b.memory_id, a.memory_id, "supports", first.seq + 3),
    ]


def test_forgetting_either_end_removes_its_links_and_deleting_does_not(log):
    a, b, c = stored("one"), stored("two"), stored("three")
    append(log, a, b, c,
           MemoriesLinked(source_id=a.memory_id, target_id=b.memory_id, link_type=LinkType.SUPPORTS),
           MemoriesLinked(source_id=c.memory_id, target_id=a.memory_id, link_type=LinkType.SUPERSEDES),
           MemoriesLinked(source_id=b.memory_id, target_id=c.memory_id, link_type=LinkType.DEPENDS_ON),
           MemoryDeleted(memory_id=b.memory_id))
    forget(log, a.memory_id)
    rows = projected(log, LinksProjection()).db.execute("SELECT source_id, target_id FROM links").fetchall()
    assert rows == [(b.memory_id, c.memory_id)]


# -- every projection: event by event == one batch -----------------------------------------


def _busy_log(log: SqliteEventLog) -> None:
    a, b, c = stored("alpha text", entity="acme.web", tags=["x"]), stored("beta text", entity="acme"), stored("gamma")
    append(log, a, b)
    append(log, c, EntityRegistered(name="acme", description="client"))
    append(log, MemoryUpdated(memory_id=a.memory_id, text="alpha revised", entity="acme.sales"),
           MemoriesLinked(source_id=a.memory_id, target_id=b.memory_id, link_type=LinkType.SUPPORTS))
    append(log, MemoryDeleted(memory_id=c.memory_id))
    append(log, MemoryUpdated(memory_id=b.memory_id, entity="beta.team"))
    forget(log, a.memory_id)
    d = stored("delta", entity="acme.sales")
    append(log, d, EntityRegistered(name="acme.sales", description="sales"),
           MemoriesLinked(source_id=d.memory_id, target_id=b.memory_id, link_type=LinkType.REFINES))


@pytest.mark.parametrize("make", [MemoriesProjection, FullTextProjection, EntitiesProjection, LinksProjection,
                                  "embeddings"])
def test_projecting_event_by_event_equals_projecting_in_one_batch(log, embedder, make):
    _busy_log(log)
    new = (lambda: EmbeddingsProjection(embedder)) if make == "embeddings" else make
    batch = projected(log, new())
    single = projected(log, new(), one_at_a_time=True)
    assert batch.snapshot() == single.snapshot()
    assert batch.checkpoint == single.checkpoint == log.last_seq()
    assert any(batch.snapshot().values())


_NAMES = ("acme", "acme.web", "acme.web.team", "beta", "beta.x", "gamma")
_TEXTS = ("the launch moved", "budget approved", "standup at ten", "coffee is great")
_STAMPS = (None, "2026-01-01T10:00:00.000000Z", "2026-01-01T10:20:00.000000Z", "2026-01-02T10:00:00.000000Z")
_ref = st.integers(0, 30)
_event_ops = st.lists(st.one_of(
    st.tuples(st.just("store"), st.sampled_from((None, *_NAMES)), st.sampled_from(_TEXTS),
              st.sampled_from(("cli", "web", None)), st.sampled_from(_STAMPS)),
    st.tuples(st.just("entity"), _ref, st.sampled_from((None, *_NAMES))),
    st.tuples(st.just("text"), _ref, st.sampled_from(_TEXTS)),
    st.tuples(st.just("time"), _ref, st.sampled_from(_STAMPS)),
    st.tuples(st.just("delete"), _ref),
    st.tuples(st.just("forget"), _ref),
    st.tuples(st.just("register"), st.sampled_from(_NAMES), st.sampled_from((None, *_NAMES))),
    st.tuples(st.just("link"), _ref, _ref),
    st.tuples(st.just("commit")),
), min_size=1, max_size=40)


def _append_ops(log: SqliteEventLog, ops: list[tuple]) -> None:
    """Turn ops into events the service could have written, appended in the groups `commit` ends."""
    live: list[str] = []
    deleted: set[str] = set()
    group: list[tuple[EventPayload, str | None]] = []

    def flush():
        if group:
            log.append_events([EventDraft(event_id=p.memory_id if isinstance(p, MemoryStored) else new_uuid7(),
                                          payload=p, actor=Actor("unit", client)) for p, client in group])
            group.clear()

    for op in ops:
        kind = op[0]
        pick = (lambda n: live[n % len(live)]) if live else None
        if kind == "store":
            payload = stored(op[2], op[1], occurred_at=op[4])
            live.append(payload.memory_id)
            group.append((payload, op[3]))
        elif kind == "register":
            if op[2] != op[1]:
                group.append((EntityRegistered(name=op[1], parent=op[2]), "cli"))
        elif kind == "commit":
            flush()
        elif pick is None:
            continue
        elif kind == "forget":
            flush()  # the tombstone redacts what is already in the log
            memory_id = pick(op[1])
            live.remove(memory_id)
            forget(log, memory_id)
        elif pick(op[1]) in deleted:
            continue  # the service refuses to change a deleted memory
        elif kind == "entity":
            group.append((MemoryUpdated(memory_id=pick(op[1]), entity=op[2]), "cli"))
        elif kind == "text":
            group.append((MemoryUpdated(memory_id=pick(op[1]), text=op[2]), "cli"))
        elif kind == "time":
            group.append((MemoryUpdated(memory_id=pick(op[1]), occurred_at=op[2]), "cli"))
        elif kind == "delete":
            deleted.add(pick(op[1]))
            group.append((MemoryDeleted(memory_id=pick(op[1])), "cli"))
        elif kind == "link" and pick(op[1]) != pick(op[2]) and pick(op[2]) not in deleted:
            group.append((MemoriesLinked(source_id=pick(op[1]), target_id=pick(op[2]),
                                         link_type=LinkType.SUPPORTS), "cli"))
    flush()


def _fresh_set() -> ProjectionSet:
    return ProjectionSet(open_projection_db(":memory:"),
                         [MemoriesProjection(), FullTextProjection(), EntitiesProjection(), LinksProjection()])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_event_ops, cuts=st.lists(st.integers(1, 60), max_size=8))
def test_any_split_of_the_log_into_batches_projects_the_same_state(ops, cuts):
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        events = SqliteEventLog(Path(tmp) / LOG_FILE, OWNER, KeyRing(tmp))
        try:
            _append_ops(events, ops)
            whole = _fresh_set()
            whole.catch_up(events)
            split = _fresh_set()
            for cut in sorted(set(cuts)):
                split.catch_up(events, to_seq=cut)
            split.catch_up(events)
            assert split.snapshot() == whole.snapshot()
            assert split.checkpoint == whole.checkpoint == events.last_seq()
        finally:
            events.close()


# -- vector index --------------------------------------------------------------------------


def _unit(rng: np.random.Generator, dims: int) -> np.ndarray:
    v = rng.standard_normal(dims).astype(np.float32)
    return v / np.linalg.norm(v)


_vector_ops = st.lists(st.tuples(st.sampled_from(["upsert", "upsert", "remove"]), st.integers(0, 90)),
                       max_size=150)


@settings(max_examples=60, deadline=None)
@given(ops=_vector_ops, seed=st.integers(0, 2**32 - 1), k=st.integers(-1, 100),
       allowed=st.one_of(st.none(), st.sets(st.integers(0, 95), max_size=40)))
def test_vector_search_finds_the_nearest_by_brute_force_cosine_within_its_error_bound(ops, seed, k, allowed):
    dims = 12
    rng = np.random.default_rng(seed)
    index, model = VectorIndex(dims), {}
    for op, n in ops:
        key = f"m{n}"
        if op == "upsert":
            model[key] = _unit(rng, dims)
            index.upsert(key, model[key])
        else:
            index.remove(key)
            model.pop(key, None)
    assert len(index) == len(model)
    assert all(key in index for key in model) and "m999" not in index

    query = _unit(rng, dims)
    allowed_ids = None if allowed is None else {f"m{n}" for n in allowed}
    candidates = [key for key in model if allowed_ids is None or key in allowed_ids]
    exact = {key: float(model[key] @ query) for key in candidates}
    found = index.search(query, k, allowed_ids)
    bound = index.error_bound(query)
    assert 0 < bound < 0.02 or not model
    # As many as asked (or allowed), in the order of their scores, each score within the bound ...
    assert len(found) == min(max(k, 0), len(candidates))
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert all(abs(score - exact[key]) <= bound for key, score in found)
    # ... and nothing left out is nearer than the last one found by more than the error allows.
    if found:
        missed = [exact[key] for key in candidates if key not in dict(found)]
        assert all(score <= exact[found[-1][0]] + 2 * bound for score in missed)


@pytest.mark.parametrize("rows", [1, 1023, 1025, 5000])
def test_a_vector_scan_split_between_threads_scores_every_row_as_one_pass_does(monkeypatch, rows):
    import projections.vectors as vectors

    rng = np.random.default_rng(rows)
    index = VectorIndex(16)
    index.load(((f"m{i}", _unit(rng, 16)) for i in range(rows)), rows)
    query = _unit(rng, 16)
    whole = index._scan(query)
    monkeypatch.setattr(vectors, "_SPLIT_ROWS", 0)  # split whatever the size (1,024-row blocks per part)
    monkeypatch.setattr(vectors, "_SCAN_HELPERS", 3)
    monkeypatch.setattr(vectors, "_scan_pool", ThreadPoolExecutor(3))
    np.testing.assert_array_equal(index._scan(query), whole)
    assert index.search(query, 10) == [(f"m{i}", float(whole[i])) for i in np.argsort(-whole, kind="stable")[:10]]


def test_vector_upsert_replaces_the_vector_and_remove_moves_the_last_row():
    index = VectorIndex(3)
    x, y, z = (np.eye(3, dtype=np.float32)[i] for i in range(3))
    index.upsert("a", x)
    index.upsert("b", y)
    index.upsert("c", z)
    index.upsert("a", y)  # replaced in place
    assert index.search(x, 3)[0][1] == pytest.approx(0.0)
    index.remove("a")  # "c" moves into a's row
    index.remove("a")  # a second remove is harmless
    assert len(index) == 2
    assert index.search(z, 1) == [("c", pytest.approx(1.0))]
    assert index.search(y, 1) == [("b", pytest.approx(1.0))]
    assert index.search(y, 5, allowed=set()) == []
    index.clear()
    assert len(index) == 0 and index.search(y, 5) == []


# -- the projection set ----------------------------------------------------------------------


class RecordingFullText(FullTextProjection):
    """The full-text projection at a new version, recording what it is asked to apply."""

    version = "2"

    def __init__(self):
        self.seqs: list[int] = []

    def apply(self, db, events):
        self.seqs += [e.seq for e in events]
        super().apply(db, events)


class RecordingLinks(LinksProjection):
    def __init__(self):
        self.seqs: list[int] = []

    def apply(self, db, events):
        self.seqs += [e.seq for e in events]
        super().apply(db, events)


def test_a_version_change_rebuilds_that_projection_alone_from_seq_1(log, tmp_path):
    _busy_log(log)
    path = tmp_path / "projections.sqlite"
    first = ProjectionSet(open_projection_db(path), [MemoriesProjection(), FullTextProjection(), LinksProjection()])
    first.catch_up(log)
    before = first.snapshot()
    first.db.close()

    fulltext, links = RecordingFullText(), RecordingLinks()
    again = ProjectionSet(open_projection_db(path), [MemoriesProjection(), fulltext, links])
    last = log.last_seq()
    assert again.checkpoints() == {"memories": last, "fulltext": 0, "links": last}
    assert again.db.execute("SELECT count(*) FROM memories_fts").fetchone() == (0,)  # dropped
    again.catch_up(log)
    assert fulltext.seqs == list(range(1, last + 1))
    assert links.seqs == []
    assert again.checkpoints() == {"memories": last, "fulltext": last, "links": last}
    assert dict(again.db.execute("SELECT name, version FROM projection_state"))["fulltext"] == "2"
    assert again.snapshot() == before


def test_catching_up_twice_applies_nothing_the_second_time(log):
    _busy_log(log)
    ps = projected(log, MemoriesProjection(), LinksProjection())
    assert ps.catch_up(log) == 0
    append(log, stored("one more"))
    assert ps.catch_up(log) == 1 and ps.checkpoint == log.last_seq()


class FailingLinks(LinksProjection):
    def __init__(self):
        self.fail = True

    def apply(self, db, events):
        super().apply(db, events)
        if self.fail:
            raise RuntimeError("disk on fire")


def test_a_failing_projection_rolls_back_the_whole_batch_for_every_projection(log, embedder):
    append(log, stored("first memory"))
    links = FailingLinks()
    links.fail = False
    embeddings = EmbeddingsProjection(embedder)
    ps = ProjectionSet(open_projection_db(":memory:"), [MemoriesProjection(), embeddings, links])
    ps.catch_up(log)
    before = ps.snapshot()
    a, b = stored("second memory"), stored("third memory")
    append(log, a, b, MemoriesLinked(source_id=a.memory_id, target_id=b.memory_id, link_type=LinkType.REFINES))

    links.fail = True
    with pytest.raises(RuntimeError, match="disk on fire"):
        ps.catch_up(log)
    assert ps.snapshot() == before
    assert ps.checkpoint == 1 and set(ps.checkpoints().values()) == {1}
    assert len(embeddings.index) == 1 and a.memory_id not in embeddings.index

    links.fail = False
    assert ps.catch_up(log) == 3
    fresh = projected(log, MemoriesProjection(), EmbeddingsProjection(embedder), LinksProjection())
    assert ps.snapshot() == fresh.snapshot()
    assert holds_exactly(embeddings.index, {r[0] for r in ps.db.execute("SELECT memory_id FROM embeddings")})
    assert len(embeddings.index) == 3


def _populate(svc: MemoryService) -> None:
    a = svc.store(ALICE, StoreMemory(text="the deploy pipeline uses blue green releases", entity="acme.web"))
    b = svc.store(ALICE, StoreMemory(text="alice prefers green tea", tags=["pref"]))
    c = svc.store(ALICE, StoreMemory(text="the report is due friday", entity="acme"))
    svc.update(ALICE, a.id, UpdateMemory(text="the deploy pipeline uses canary releases"))
    svc.link(ALICE, a.id, c.id, LinkType.DEPENDS_ON)
    svc.delete(ALICE, b.id)
    svc.register_entity(ALICE, "acme", "a client")
    svc.forget(ALICE, c.id)
    svc.store(ALICE, StoreMemory(text="standup moved to ten", entity="acme.web"))
    # Settled: the last store's embedding may still be on its way (UserStore.append).
    svc.users.get(ALICE.identity).catch_up_embeddings()


def _state(svc: MemoryService) -> dict:
    store = svc.users.get(ALICE.identity)
    live = {r[0] for r in store.view.db.execute("SELECT id FROM memories WHERE deleted = 0")}
    assert holds_exactly(store.view.embeddings.index, live)
    return store.view.projections.snapshot()


def _projection_file(data_dir: Path) -> Path:
    return next((data_dir / USERS_DIR).glob(f"*/{PROJECTIONS_FILE}"))


def test_a_deleted_projection_file_is_rebuilt_on_reopen_with_the_same_content(data_dir, embedder):
    svc = MemoryService(data_dir, embedder)
    _populate(svc)
    before = _state(svc)
    svc.close()
    path = _projection_file(data_dir)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    svc = MemoryService(data_dir, embedder)
    try:
        assert _state(svc) == before
        assert path.exists()
        assert [h.id for h in svc.search(ALICE, "canary deploy")][:1] == [
            m[0] for m in before["memories"] if isinstance(m[1], str) and "canary" in m[1]]
    finally:
        svc.close()


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * (path.stat().st_size // 256 + 1))


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _scrambled_pages(path: Path) -> None:
    # a valid header, garbage everywhere else
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes((i * 37 + 11) % 256 for i in range(len(data) - page))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_garbage, _truncated, _scrambled_pages], ids=lambda f: f.__name__.strip("_"))
def test_a_corrupted_projection_file_is_rebuilt_on_reopen(data_dir, embedder, damage):
    svc = MemoryService(data_dir, embedder)
    _populate(svc)
    before = _state(svc)
    svc.close()
    path = _projection_file(data_dir)
    damage(path)

    svc = MemoryService(data_dir, embedder)
    try:
        assert _state(svc) == before
        assert svc.users.get(ALICE.identity).view.db.execute("PRAGMA quick_check").fetchone() == ("ok",)
    finally:
        svc.close()


def test_the_embedding_cache_spares_the_model_on_rebuild_reopen_and_past_views(data_dir, embedder):
    counting = CountingEmbedder(embedder)
    svc = MemoryService(data_dir, counting)
    _populate(svc)
    store = svc.users.get(ALICE.identity)
    assert counting.embedded, "the texts were embedded once"
    before = store.view.projections.snapshot()

    counting.embedded.clear()
    store.rebuild()
    assert counting.embedded == []
    assert store.view.projections.snapshot() == before
    assert holds_exactly(store.view.embeddings.index,
                         {r[0] for r in store.view.db.execute("SELECT memory_id FROM embeddings")})

    # past views need past texts (the pre-update one, the deleted one): all still cached
    for k in range(1, store.log.last_seq() + 1):
        store.view_as_of(k).db.close()
    assert counting.embedded == []
    svc.close()

    svc = MemoryService(data_dir, counting)
    try:
        assert svc.users.get(ALICE.identity).view.projections.snapshot() == before
        assert counting.embedded == []
    finally:
        svc.close()


def test_build_projections_in_memory_matches_the_store_on_disk(data_dir, embedder):
    svc = MemoryService(data_dir, embedder)
    try:
        _populate(svc)
        store = svc.users.get(ALICE.identity)
        fresh = build_projections(open_projection_db(":memory:"), embedder, cache_db=store.view.db)
        fresh.projections.catch_up(store.log)
        assert fresh.projections.snapshot() == store.view.projections.snapshot()
        ids = {r[0] for r in store.view.db.execute("SELECT memory_id FROM embeddings")}
        assert holds_exactly(fresh.embeddings.index, ids) and holds_exactly(store.view.embeddings.index, ids)
    finally:
        svc.close()


def test_a_data_dir_made_with_the_packaged_model_re_embeds_every_memory_with_int8_activations(
        data_dir, embedder, tmp_path):
    # The default model changed its arithmetic (projections/embedder.py): a data dir written before
    # holds the packaged model's vectors under its model id, and opening it re-embeds by replay.
    from projections.embedder import FastEmbedEmbedder

    packaged = FastEmbedEmbedder(dynamic=False, model_dir=tmp_path / "packaged")
    assert packaged.model_id != embedder.model_id
    before = MemoryService(data_dir, packaged)
    _populate(before)
    old_version = dict(before.users.get(ALICE.identity).view.db.execute(
        "SELECT name, version FROM projection_state"))["embeddings"]
    before.close()

    counting = CountingEmbedder(embedder)
    after = MemoryService(data_dir, counting)
    try:
        store = after.users.get(ALICE.identity)
        store.catch_up_embeddings()
        live = dict(store.view.db.execute("SELECT id, text FROM memories WHERE deleted = 0"))
        assert sorted(counting.embedded) == sorted(live.values())  # every live text, by the new model
        assert dict(store.view.db.execute("SELECT name, version FROM projection_state"))["embeddings"] \
            == f"2:{embedder.model_id}" != old_version
        index = store.view.embeddings.index
        assert holds_exactly(index, set(live))
        for memory_id, text in live.items():
            vector = embedder.embed_query(text)
            (found, score), *_ = index.search(vector, 1)
            assert found == memory_id and score >= 1 - 2 * index.error_bound(vector)
        assert [r.memory.id for r in after.retrieve_context(ALICE, RetrieveQuery(query="canary releases")).memories][0] \
            in live
    finally:
        after.close()
