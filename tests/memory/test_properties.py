"""Properties of the service over random sequences of operations, against the real model.

Three properties, each over a list-of-commands strategy run through `MemoryService`:

* incremental == rebuild: projections kept up to date event by event hold exactly what a
  replay of the whole log builds, in memory or in place (`UserStore.rebuild`), and the in-memory
  vector index mirrors the embeddings table;
* isolation: three users interleaved never see each other's memories, texts or entities, an id
  of another user is "not found" wherever an id is an input, and `isolation_check` agrees;
* point in time: `UserStore.view_as_of(k)` shows the memories as they were right after seq k,
  except memories forgotten since: erasure reaches into the past too.

Vocabularies are small so that texts repeat; the model runs behind a per-text memo, so each
distinct text is embedded once per module. MEMORY_PROPERTY_EXAMPLES=1000 runs a longer soak.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from memory.audit import isolation_check, verify_user
from memory.commands import RetrieveQuery, SessionItem, StoreMemory, SyncSession, UpdateMemory
from memory.errors import InvalidInput, NotFound
from memory.identity import Identity
from memory.model import LinkType, MemoryType, Scope, Status
from memory.service import Caller, MemoryService
from memory.userstore import UserStore, build_projections
from projections.base import open_projection_db

# The properties are about content, not durability: on tmpfs the log's fsync per append is free,
# which keeps an example cheap and the run time steady on a busy host.
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None

SETTINGS = settings(
    max_examples=int(os.environ.get("MEMORY_PROPERTY_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


class MemoEmbedder:
    """The real embedder behind a per-text memo (same vectors, each text embedded once)."""

    def __init__(self, model):
        self.model = model
        self.model_id = model.model_id
        self.dimensions = model.dimensions
        self._memo: dict[str, np.ndarray] = {}

    def embed_documents(self, texts):
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            for text, vector in zip(missing, self.model.embed_documents(missing), strict=True):
                self._memo[text] = vector
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])

    def embed_query(self, text):
        return self.embed_documents([text])[0]


@pytest.fixture(scope="module")
def model(embedder) -> MemoEmbedder:
    return MemoEmbedder(embedder)


# -- vocabulary ---------------------------------------------------------------------------

TEXTS = (
    "the deploy pipeline uses blue green releases",
    "alice prefers green tea over coffee in the morning",
    "the quarterly report is due on friday",
    "use ruff for linting the python code",
    "the database migration failed on staging",
    "marketing wants the launch moved to june",
)
QUERIES = ("", "deploy", "green tea", "database staging failure", "when is the report due", "the of and")
ENTITIES = (None, "acme", "acme.marketing", "acme.marketing.web", "acmeco", "beta", "gamma")
PROJECTS = (None, "acme", "beta")
TAGS = ("x", "y", "decision", "status")
CLIENTS = ("cli", "web")
TASKS = (None, "t1")
STAMPS = (None, "2020-01-01", "2026-01-01T10:00:00Z")
# Names to register, and parents to give them: explicit parents may contradict the dotted one
# ("acme.marketing" under "beta"), change between registrations, or form cycles.
REGISTERED = ("acme", "acme.marketing", "acme.marketing.web", "beta", "gamma", "delta", "acmeco")
PARENTS = (None, None, "acme", "beta", "gamma", "delta", "acme.marketing")

ref = st.integers(0, 40)
tags = st.lists(st.sampled_from(TAGS), max_size=2)


def _store_op():
    return st.tuples(
        st.just("store"), st.sampled_from(range(len(TEXTS))), st.sampled_from(list(MemoryType)),
        st.sampled_from(list(Scope)), st.sampled_from(PROJECTS), st.sampled_from(ENTITIES), tags,
        st.sampled_from([None, *Status]), st.sampled_from(("t1", "t1", None)), st.sampled_from(STAMPS),
        st.sampled_from(CLIENTS),
    )


_update_changes = st.fixed_dictionaries({}, optional={
    "text": st.sampled_from(range(len(TEXTS))),
    "tags": tags,
    "entity": st.sampled_from(ENTITIES),
    "status": st.sampled_from([None, *Status]),
    "memory_type": st.sampled_from(list(MemoryType)),
    "occurred_at": st.sampled_from(STAMPS),
    "priority": st.integers(0, 3),
})

_item = st.tuples(st.sampled_from(range(len(TEXTS))), st.sampled_from(ENTITIES), tags,
                  st.one_of(st.none(), st.none(), ref))

_retrieve = st.fixed_dictionaries(
    {"query": st.sampled_from(QUERIES)},
    optional={
        "memory_types": st.lists(st.sampled_from(list(MemoryType)), min_size=1, max_size=2),
        "scope": st.sampled_from(list(Scope)),
        "project": st.sampled_from(PROJECTS[1:]),
        "entity": st.sampled_from(ENTITIES[1:]),
        "tags": st.lists(st.sampled_from(TAGS), min_size=1, max_size=2),
        "status": st.sampled_from(list(Status)),
        "task_id": st.just("t1"),
        "limit": st.integers(1, 5),
        "recency_weight": st.sampled_from([0.0, 0.3, 1.0]),
        "include_related": st.booleans(),
    },
)

OPS = st.one_of(
    _store_op(),
    _store_op(),
    _store_op(),
    st.tuples(st.just("update"), ref, _update_changes),
    st.tuples(st.just("delete"), ref),
    st.tuples(st.just("forget"), ref),
    st.tuples(st.just("link"), ref, ref, st.sampled_from(list(LinkType))),
    st.tuples(st.just("register"), st.sampled_from(REGISTERED), st.sampled_from([None, "about it"]),
              st.sampled_from(PARENTS)),
    st.tuples(st.just("set_project"), st.sampled_from(PROJECTS[1:]), st.sampled_from(CLIENTS)),
    st.tuples(st.just("sync"), st.sampled_from(PROJECTS), st.sampled_from(TASKS),
              st.fixed_dictionaries({}, optional={k: st.lists(_item, min_size=1, max_size=2)
                                                  for k in ("decisions", "learnings", "status_updates", "feedback")})),
    st.tuples(st.just("retrieve"), _retrieve, st.sampled_from(CLIENTS)),
    st.tuples(st.just("read"), st.sampled_from(["get", "history", "list_entities", "search_entities", "search",
                                               "project_summary", "context_info"]), ref),
)


# -- running ops --------------------------------------------------------------------------


@dataclass
class World:
    """What the test knows: every memory id handed out, and which are deleted or forgotten."""

    ids: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    forgotten: dict[str, int] = field(default_factory=dict)  # id -> tombstone seq
    owner: dict[str, str] = field(default_factory=dict)  # id -> user sub

    def pick(self, n: int, user: str | None = None) -> str:
        """The n-th id; for a user, two in three picks are among their own ids."""
        ids = self.ids
        if user is not None and n % 3:
            ids = [i for i in ids if self.owner[i] == user] or ids
        return ids[n % len(ids)] if ids else "01890000-0000-7000-8000-000000000000"


def _text(i: int, suffix: str) -> str:
    return f"{TEXTS[i]} {suffix}".strip()


def run_op(svc: MemoryService, user: str, op: tuple, world: World, *, suffix: str = "",
           entity_of: Callable[[str | None], str | None] = lambda e: e) -> None:
    """Run one op as `user`; expected refusals (InvalidInput, NotFound) must append nothing."""
    caller = Caller(Identity("local", user), "cli")
    store = svc.users.get(caller.identity)
    before = store.log.last_seq()
    kind = op[0]
    try:
        _dispatch(svc, caller, user, op, world, suffix, entity_of)
    except (InvalidInput, NotFound) as error:
        event(f"{kind}: refused ({type(error).__name__})")
        assert store.log.last_seq() == before, f"{kind} failed with {error!r} but appended events"
        ids = [a for a in op[1:] if isinstance(a, int)]
        if isinstance(error, NotFound) and kind in ("update", "delete", "link") and ids:
            # the only reasons for "not found" are ids that are gone or belong to someone else
            assert any(_unavailable(world, world.pick(i, user), user) for i in ids), error
        return
    event(f"{kind}: done")
    assert store.log.last_seq() > before, f"{kind} appended nothing"


def _unavailable(world: World, memory_id: str, user: str, allow_deleted: bool = False) -> bool:
    return (memory_id not in world.owner or world.owner[memory_id] != user or memory_id in world.forgotten
            or (not allow_deleted and memory_id in world.deleted))


def _dispatch(svc, caller, user, op, world: World, suffix, entity_of) -> None:
    kind = op[0]
    if kind == "store":
        _, text, mtype, scope, project, entity, tag_list, status, task, stamp, client = op
        caller = Caller(caller.identity, client)
        memory = svc.store(caller, StoreMemory(
            text=_text(text, suffix), memory_type=mtype, scope=scope, project=entity_of(project),
            entity=entity_of(entity), tags=tag_list, status=status, task_id=task, occurred_at=stamp))
        if memory.id not in world.owner:  # else a duplicate of a live memory: that one is the answer
            world.ids.append(memory.id)
            world.owner[memory.id] = user
        else:
            assert world.owner[memory.id] == user and not _unavailable(world, memory.id, user)
    elif kind == "update":
        _, n, changes = op
        memory_id = world.pick(n, user)
        changes = dict(changes)
        if "text" in changes:
            changes["text"] = _text(changes["text"], suffix)
        if "entity" in changes:
            changes["entity"] = entity_of(changes["entity"])
        svc.update(caller, memory_id, UpdateMemory(**changes))
        assert not _unavailable(world, memory_id, user)
    elif kind == "delete":
        memory_id = world.pick(op[1], user)
        svc.delete(caller, memory_id)
        assert not _unavailable(world, memory_id, user)
        world.deleted.add(memory_id)
    elif kind == "forget":
        memory_id = world.pick(op[1], user)
        try:
            result = svc.forget(caller, memory_id)
        except NotFound:
            assert _unavailable(world, memory_id, user, allow_deleted=True)
            raise
        assert not _unavailable(world, memory_id, user, allow_deleted=True)
        world.forgotten[memory_id] = result.tombstone_seq
    elif kind == "link":
        _, a, b, link_type = op
        source, target = world.pick(a, user), world.pick(b, user)
        svc.link(caller, source, target, link_type)
        assert not (_unavailable(world, source, user) or _unavailable(world, target, user))
    elif kind == "register":
        _, name, description, parent = op
        entity = svc.register_entity(caller, entity_of(name), description, entity_of(parent))
        assert entity.registered and entity.name == entity_of(name)
    elif kind == "set_project":
        _, project, client = op
        svc.set_project(Caller(caller.identity, client), entity_of(project))
    elif kind == "sync":
        _, project, task, kinds = op
        items = {
            k: [SessionItem(text=_text(t, suffix), entity=entity_of(e), tags=tg,
                            supersedes=None if s is None else world.pick(s, user)) for t, e, tg, s in v]
            for k, v in kinds.items()
        }
        result = svc.sync_session(caller, SyncSession(project=entity_of(project), task_id=task, **items))
        for memory_id in result.created:
            world.ids.append(memory_id)
            world.owner[memory_id] = user
        for memory_id in result.updated + result.superseded:
            assert not _unavailable(world, memory_id, user)
    elif kind == "retrieve":
        _, q, client = op
        q = dict(q)
        if "project" in q:
            q["project"] = entity_of(q["project"])
        if "entity" in q:
            q["entity"] = entity_of(q["entity"])
        result = svc.retrieve_context(Caller(caller.identity, client), RetrieveQuery(**q))
        assert len(result.memories) <= q.get("limit", 10)
        for r in result.memories:
            for memory in [r.memory, *r.related]:
                assert world.owner.get(memory.id) == user, "retrieve_context returned another user's memory"
                assert memory.id not in world.forgotten and not memory.deleted
    elif kind == "read":
        _, what, n = op
        memory_id = world.pick(n, user)
        if what == "get":
            memory = svc.get(caller, memory_id)
            assert world.owner[memory.id] == user and memory.id not in world.forgotten
        elif what == "history":
            page = svc.history(caller, memory_id)
            assert world.owner[memory_id] == user and page.entries
        elif what == "list_entities":
            svc.list_entities(caller)
        elif what == "search_entities":
            svc.search_entities(caller, "acme")
        elif what == "project_summary":
            summary = svc.project_summary(caller, entity_of(PROJECTS[1 + n % 2]))
            for memory in summary.recent_decisions + summary.open_tasks:
                assert world.owner[memory.id] == user and memory.id not in world.forgotten
        elif what == "context_info":
            info = svc.context_info(caller)
            assert info.total_memories == len([i for i in world.ids if world.owner[i] == user
                                               and i not in world.deleted and i not in world.forgotten])
        else:
            for hit in svc.search(caller, "green deploy report"):
                assert world.owner.get(hit.id) == user
    else:  # pragma: no cover
        raise AssertionError(kind)


def _service(tmp: str, model) -> MemoryService:
    return MemoryService(Path(tmp), model)


def _fresh_snapshot(store: UserStore, model) -> dict[str, list[tuple]]:
    fresh = build_projections(open_projection_db(":memory:"), model, cache_db=store.view.db)
    fresh.projections.catch_up(store.log)
    return fresh.projections.snapshot()


def _assert_index_mirrors_table(store: UserStore, model) -> None:
    index = store.view.embeddings.index
    rows = dict(store.view.db.execute("SELECT memory_id, text_hash FROM embeddings"))
    assert len(index) == len(rows)
    assert all(memory_id in index for memory_id in rows)
    texts = dict(store.view.db.execute("SELECT id, text FROM memories WHERE deleted = 0"))
    assert set(texts) == set(rows), "the embeddings table must hold exactly the live memories"
    for memory_id, text in texts.items():
        # the vector in the index is the embedding of the memory's current text
        query = model.embed_query(text)
        [(found, score)] = index.search(query, 1, {memory_id})
        assert found == memory_id and score == pytest.approx(1.0, abs=index.error_bound(query) + 1e-4)


# -- a. incremental == rebuild --------------------------------------------------------------


@SETTINGS
@given(ops=st.lists(OPS, min_size=12, max_size=60))
def test_projections_kept_up_event_by_event_equal_a_rebuild_from_the_log(model, ops):
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        svc = _service(tmp, model)
        try:
            world = World()
            for op in ops:
                run_op(svc, "alice", op, world)
            store = svc.users.get(Identity("local", "alice"))
            # The embeddings of the last stores may still be on their way (UserStore.append).
            store.catch_up_embeddings()
            live = store.view.projections.snapshot()
            assert live == _fresh_snapshot(store, model)
            _assert_index_mirrors_table(store, model)

            store.rebuild()
            assert store.view.projections.snapshot() == live
            _assert_index_mirrors_table(store, model)
            assert store.view.checkpoint == store.log.last_seq()
        finally:
            svc.close()


# -- b. isolation ---------------------------------------------------------------------------

USERS = ("alice", "bob", "carol")
# every user's texts and entities carry a word no other user's do, so a leak is visible
WORDS = {"alice": "amber", "bob": "birch", "carol": "cedar"}


def _entity_for(user: str) -> Callable[[str | None], str | None]:
    def rename(name: str | None) -> str | None:
        return None if name is None else f"{WORDS[user]}{name}"
    return rename


@SETTINGS
@given(steps=st.lists(st.tuples(st.sampled_from(USERS), OPS), min_size=15, max_size=45))
def test_interleaved_users_never_see_each_others_memories_texts_or_entities(model, steps):
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        svc = _service(tmp, model)
        try:
            world = World()
            for user, op in steps:
                run_op(svc, user, op, world, suffix=WORDS[user], entity_of=_entity_for(user))
                _assert_sees_only_own(svc, user, world, thorough=False)
            for user in USERS:
                _assert_sees_only_own(svc, user, world)
                _assert_others_ids_are_not_found(svc, user, world)
            assert isolation_check(Path(tmp), svc.keys) == []
            for user in {u for u, _ in steps}:
                report = verify_user(Path(tmp), Identity("local", user), svc.keys, model)
                assert report.ok, report.problems
        finally:
            svc.close()


def _others_words(user: str) -> list[str]:
    return [w for u, w in WORDS.items() if u != user]


def _assert_sees_only_own(svc: MemoryService, user: str, world: World, *, thorough: bool = True) -> None:
    caller = Caller(Identity("local", user), "cli")
    foreign = _others_words(user)
    queries = ["deploy green " + " ".join(foreign)] + (["the report", ""] if thorough else [])
    for query in queries:
        result = svc.retrieve_context(caller, RetrieveQuery(query=query, limit=50, recency_weight=0.0,
                                                            include_related=True))
        for r in result.memories:
            for memory in (r.memory, *r.related):
                assert world.owner[memory.id] == user
                assert not any(w in memory.text or w in (memory.entity or "") or w in (memory.project or "")
                               for w in foreign)
    if not thorough:
        return
    for hit in svc.search(caller, " ".join(foreign) + " report"):
        assert world.owner[hit.id] == user and not any(w in hit.snippet for w in foreign)
    names = [e.name for e in svc.list_entities(caller, limit=100).entities]
    names += [e.name for w in foreign for e in svc.search_entities(caller, w + "acme", limit=100)]
    for name in names:
        assert name.startswith(WORDS[user]), name
    others_ids = {i for i, owner in world.owner.items() if owner != user}
    for memory_id in [i for i in world.ids if world.owner[i] == user][:3]:
        # (the queries of reads are the caller's own words, and ours named the others' words)
        payloads = [{k: v for k, v in (e.payload or {}).items() if k != "query"}
                    for e in svc.history(caller, memory_id).entries]
        shown = json.dumps(msgspec.to_builtins(payloads))
        assert not any(w in shown for w in foreign) and not any(i in shown for i in others_ids)


def _assert_others_ids_are_not_found(svc: MemoryService, user: str, world: World) -> None:
    caller = Caller(Identity("local", user), "cli")
    store = svc.users.get(caller.identity)
    mine = next((i for i in world.ids if world.owner[i] == user and i not in world.forgotten
                 and i not in world.deleted), None)
    for memory_id in [i for i in world.ids if world.owner[i] != user]:
        before = store.log.last_seq()
        attempts: list[Callable[[], object]] = [
            lambda: svc.get(caller, memory_id),
            lambda: svc.history(caller, memory_id),
            lambda: svc.update(caller, memory_id, UpdateMemory(text="stolen")),
            lambda: svc.delete(caller, memory_id),
            lambda: svc.forget(caller, memory_id),
            lambda: svc.sync_session(caller, SyncSession(learnings=[SessionItem(text="x", supersedes=memory_id)])),
        ]
        if mine is not None:
            attempts += [lambda: svc.link(caller, mine, memory_id, LinkType.SUPPORTS),
                         lambda: svc.link(caller, memory_id, mine, LinkType.SUPPORTS)]
        for attempt in attempts:
            with pytest.raises(NotFound):
                attempt()
        assert store.log.last_seq() == before, "a refused call appended events"
    for other in USERS:
        if other != user:
            for project in PROJECTS[1:]:
                with pytest.raises(NotFound):
                    svc.set_project(caller, _entity_for(other)(project))


# -- c. point in time ------------------------------------------------------------------------


@SETTINGS
@given(ops=st.lists(OPS, min_size=12, max_size=60))
def test_a_view_as_of_seq_k_equals_the_live_memories_right_after_k_minus_later_erasures(model, ops):
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        svc = _service(tmp, model)
        try:
            world = World()
            store = svc.users.get(Identity("local", "alice"))
            taken: dict[int, list[tuple]] = {0: store.view.projections.snapshot()["memories"]}
            for op in ops:
                run_op(svc, "alice", op, world)
                taken[store.log.last_seq()] = store.view.projections.snapshot()["memories"]
            for k, then in taken.items():
                # Erasure applies to the past too: a memory forgotten after k is absent from
                # the view as of k, although it was live at k. Everything else is as it was.
                # The reads that returned a forgotten memory are redacted too, so the other
                # memories those reads touched lose that entry of their history as well.
                erased_later = {m for m, tomb in world.forgotten.items() if tomb > k}
                redacted_reads = {e.seq for e in store.log.read_events(0, k) if e.redacted and e.type == "memories.read"}
                view = store.view_as_of(k)
                past = view.projections.snapshot()["memories"]
                assert view.checkpoint == k

                def kept(rows):
                    return [r for r in rows if r[0] not in erased_later
                            and not (r[1] in redacted_reads and r[2] == "memories.read")]

                assert kept(past) == kept(then)
                assert not view.db.execute(
                    f"SELECT id FROM memories WHERE id IN ({', '.join('?' * len(erased_later))})",
                    sorted(erased_later)).fetchall()
                # only what the erasure left in the log (reads, links) still mentions them
                kinds = {t for m, _, t in view.db.execute("SELECT * FROM memory_events") if m in erased_later}
                assert kinds <= {"memories.read", "memories.linked", "memory.deduplicated"}
                view.db.close()
        finally:
            svc.close()


def test_a_memory_forgotten_later_is_absent_from_the_past_view_while_others_are_as_they_were(model, tmp_path):
    """The point-in-time exception, spelled out on one example."""
    svc = _service(str(tmp_path), model)
    try:
        caller = Caller(Identity("local", "alice"), "cli")
        kept = svc.store(caller, StoreMemory(text=TEXTS[0]))
        gone = svc.store(caller, StoreMemory(text=TEXTS[1]))
        store = svc.users.get(caller.identity)
        k = store.log.last_seq()
        svc.update(caller, kept.id, UpdateMemory(text=TEXTS[2]))
        svc.forget(caller, gone.id)
        past = store.view_as_of(k)
        texts = dict(past.db.execute("SELECT id, text FROM memories"))
        assert texts == {kept.id: TEXTS[0]}
        result = svc.retrieve_context(caller, RetrieveQuery(query="green tea", as_of=k))
        assert [r.memory.id for r in result.memories] == [kept.id]
        assert result.as_of_seq == k
    finally:
        svc.close()


def test_a_refused_command_appends_nothing_and_names_no_other_users_data(model, tmp_path):
    svc = _service(str(tmp_path), model)
    try:
        alice = Caller(Identity("local", "alice"), "cli")
        bob = Caller(Identity("local", "bob"), "cli")
        secret = svc.store(alice, StoreMemory(text="alice secret plan", project="amberproj", scope=Scope.PROJECT))
        store = svc.users.get(bob.identity)
        before = store.log.last_seq()
        with pytest.raises(NotFound) as raised:
            svc.set_project(bob, "amberproj")
        assert "known:" not in str(raised.value)  # bob knows no project; alice's are not listed
        with pytest.raises(NotFound) as raised:
            svc.get(bob, secret.id)
        assert "secret" not in str(raised.value)
        assert store.log.last_seq() == before
        assert msgspec.to_builtins(svc.context_info(bob))["known_projects"] == []
    finally:
        svc.close()


def test_two_users_holding_the_same_memory_id_each_read_their_own_without_a_violation(model, tmp_path):
    svc = _service(str(tmp_path), model)
    try:
        alice, bob = Caller(Identity("local", "alice"), "cli"), Caller(Identity("local", "bob"), "cli")
        mine = svc.store(alice, StoreMemory(text="alice keeps her own notes"))
        theirs = svc.store(bob, StoreMemory(text="bob keeps his own notes", event_id=mine.id))
        assert theirs.id == mine.id
        # no leak: each user reads their own memory under the shared id
        assert svc.get(alice, mine.id).text == "alice keeps her own notes"
        assert svc.get(bob, mine.id).text == "bob keeps his own notes"
        assert isolation_check(tmp_path, svc.keys) == []
    finally:
        svc.close()
