"""retrieve_context through MemoryService: hybrid ranking, filters, recency, related memories,
hostile query syntax and point-in-time answers, with the real model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.commands import RetrieveQuery, StoreMemory, UpdateMemory
from memory.errors import InvalidInput
from memory.identity import Identity
from memory.model import LinkType, MemoryType, Scope, Status
from memory.service import Caller, MemoryService

ALICE = Caller(Identity("local", "alice"), "cli")

CORPUS = (
    "Alice is allergic to peanuts and carries an epipen",
    "The deploy pipeline runs on Kubernetes with blue-green releases",
    "Quarterly revenue grew by ten percent in the third quarter",
    "Bob's favourite programming language is Rust",
    "The office wifi password changes every month",
    "Use the frobnicator script to rotate the staging database credentials",
    "Our team standup is at 9:30 every weekday morning",
    "The cat knocked the plant off the windowsill again",
)


@pytest.fixture
def svc(data_dir, embedder):
    service = MemoryService(data_dir, embedder)
    yield service
    service.close()


def store(svc: MemoryService, text: str, **fields) -> str:
    return svc.store(ALICE, StoreMemory(text=text, **fields)).id


def retrieve(svc: MemoryService, query: str = "", **fields) -> list[str]:
    # These tests are about ranking and filters, not the relevance floor (tests/projections/test_fusion.py).
    fields.setdefault("min_score", 0.0)
    return [r.memory.id for r in svc.retrieve_context(ALICE, RetrieveQuery(query=query, **fields)).memories]


@pytest.fixture
def corpus(svc) -> dict[str, str]:
    """text -> id"""
    return {text: store(svc, text) for text in CORPUS}


# -- relevance ------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ("which nuts make her sick", CORPUS[0]),
    ("how do we ship code to production", CORPUS[1]),
    ("how much did sales increase", CORPUS[2]),
    ("when is the daily meeting", CORPUS[6]),
])
def test_a_paraphrased_query_ranks_the_relevant_memory_first(svc, corpus, query, expected):
    found = retrieve(svc, query, recency_weight=0.0)
    assert found[0] == corpus[expected]


def test_an_exact_rare_word_ranks_its_memory_first(svc, corpus):
    rare = store(svc, "Remember: the quarterly offsite budget code is XQZ-frumious")
    for query in ("frobnicator", "frumious"):
        result = svc.retrieve_context(ALICE, RetrieveQuery(query=query, recency_weight=0.0)).memories
        assert result[0].memory.id == (corpus[CORPUS[5]] if query == "frobnicator" else rare)
        assert result[0].score > result[1].score


def test_deleted_and_forgotten_memories_are_not_retrieved(svc, corpus):
    deleted, forgotten = corpus[CORPUS[0]], corpus[CORPUS[5]]
    svc.delete(ALICE, deleted)
    svc.forget(ALICE, forgotten)
    for query in ("peanut allergy", "frobnicator credentials", ""):
        found = retrieve(svc, query, limit=20)
        assert sorted(found) == sorted(set(corpus.values()) - {deleted, forgotten})


# -- filters --------------------------------------------------------------------------------


def test_memory_types_filter_keeps_only_those_types(svc):
    ids = {t: store(svc, f"the release checklist ({t.value})", memory_type=t) for t in MemoryType}
    found = retrieve(svc, "release checklist", memory_types=[MemoryType.TASK_INSTRUCTION, MemoryType.EPISODIC])
    assert sorted(found) == sorted([ids[MemoryType.TASK_INSTRUCTION], ids[MemoryType.EPISODIC]])


def test_scope_filter_keeps_only_that_scope(svc):
    everywhere = store(svc, "release notes go to the wiki")
    in_project = store(svc, "release notes go to the acme wiki", scope=Scope.PROJECT, project="acme")
    in_task = store(svc, "release notes for task 7", scope=Scope.TASK, project="acme", task_id="t7")
    assert retrieve(svc, "release notes", scope=Scope.PROJECT) == [in_project]
    assert retrieve(svc, "release notes", scope=Scope.TASK) == [in_task]
    assert retrieve(svc, "release notes", scope=Scope.GLOBAL) == [everywhere]


@pytest.fixture
def projects(svc) -> dict[str, str]:
    return {
        "global": store(svc, "deadlines are always in UTC"),
        "acme": store(svc, "acme deadlines are on fridays", scope=Scope.PROJECT, project="acme"),
        "acme-context": store(svc, "acme deadline policy is strict", memory_type=MemoryType.PROJECT_CONTEXT,
                              scope=Scope.PROJECT, project="acme"),
        "acme-superseded": store(svc, "acme deadlines were on mondays", memory_type=MemoryType.PROJECT_CONTEXT,
                                 scope=Scope.PROJECT, project="acme", status=Status.SUPERSEDED),
        "acme-completed": store(svc, "acme deadline migration done", memory_type=MemoryType.PROJECT_CONTEXT,
                                scope=Scope.PROJECT, project="acme", status=Status.COMPLETED),
        "beta": store(svc, "beta deadlines are on tuesdays", scope=Scope.PROJECT, project="beta"),
        "acme-sub": store(svc, "acme.web deadlines slip", scope=Scope.PROJECT, project="acme.web"),
    }


def test_a_project_filter_includes_global_memories_and_excludes_other_projects(svc, projects):
    found = set(retrieve(svc, "deadlines", project="acme", limit=20))
    assert found == {projects["global"], projects["acme"], projects["acme-context"]}


def test_project_context_defaults_to_active_status_and_a_status_filter_overrides_it(svc, projects):
    assert set(retrieve(svc, "deadlines", project="acme", status=Status.SUPERSEDED, limit=20)) == {
        projects["acme-superseded"]}
    assert set(retrieve(svc, "deadlines", project="acme", status=Status.ACTIVE, limit=20)) == {
        projects["acme-context"]}
    # without a project only a superseded memory is hidden (issue 14), and include_superseded shows it
    everything = set(retrieve(svc, "deadlines", limit=20))
    assert projects["acme-completed"] in everything and projects["acme-superseded"] not in everything
    assert projects["acme-superseded"] in set(retrieve(svc, "deadlines", limit=20, include_superseded=True))


def test_the_active_project_is_the_default_project_filter(svc, projects):
    svc.set_project(ALICE, "beta")
    result = svc.retrieve_context(ALICE, RetrieveQuery(query="deadlines", limit=20))
    assert result.project == "beta"
    assert {r.memory.id for r in result.memories} == {projects["global"], projects["beta"]}
    # another client of the same user has no active project
    other = Caller(ALICE.identity, "web")
    found = {r.memory.id for r in svc.retrieve_context(other, RetrieveQuery(query="deadlines", limit=20)).memories}
    assert found == set(projects.values()) - {projects["acme-superseded"]}


def test_task_id_filter_keeps_only_that_task(svc):
    t1 = store(svc, "write the migration", scope=Scope.TASK, project="acme", task_id="t1")
    store(svc, "write the changelog", scope=Scope.TASK, project="acme", task_id="t2")
    store(svc, "write tests always")
    assert retrieve(svc, "write", task_id="t1") == [t1]


def test_entity_filter_matches_the_entity_and_its_dotted_descendants_only(svc):
    ids = {e: store(svc, f"launch plan for {e}", entity=e)
           for e in ("acme", "acme.marketing", "acme.marketing.web", "acmeco", "acme-co", "beta.acme")}
    store(svc, "launch plan without entity")
    assert set(retrieve(svc, "launch plan", entity="acme", limit=20)) == {
        ids["acme"], ids["acme.marketing"], ids["acme.marketing.web"]}
    assert set(retrieve(svc, "launch plan", entity="acme.marketing", limit=20)) == {
        ids["acme.marketing"], ids["acme.marketing.web"]}
    assert retrieve(svc, "", entity="acme.marketing.web") == [ids["acme.marketing.web"]]


def test_entity_filter_treats_underscore_and_percent_literally(svc):
    exact = store(svc, "sales numbers", entity="a_b")
    child = store(svc, "sales numbers by region", entity="a_b.west")
    store(svc, "sales numbers elsewhere", entity="axb.west")
    store(svc, "sales numbers again", entity="a_bc")
    assert set(retrieve(svc, "sales", entity="a_b", limit=20)) == {exact, child}


def test_entity_filter_is_case_sensitive_for_descendants_as_for_the_entity_itself(svc):
    store(svc, "launch plan upper", entity="ACME")
    store(svc, "launch plan upper child", entity="ACME.web")
    own = store(svc, "launch plan lower", entity="acme")
    assert retrieve(svc, "launch plan", entity="acme", limit=20) == [own]


def test_tags_filter_keeps_memories_with_any_of_the_tags(svc):
    x = store(svc, "review the budget", tags=["x"])
    xy = store(svc, "review the budget again", tags=["x", "y"])
    y = store(svc, "review the roadmap", tags=["y"])
    store(svc, "review nothing", tags=["z"])
    store(svc, "review untagged")
    assert set(retrieve(svc, "review", tags=["x"], limit=20)) == {x, xy}
    assert set(retrieve(svc, "review", tags=["x", "y"], limit=20)) == {x, xy, y}


def test_status_filter_keeps_only_that_status(svc):
    parked = store(svc, "idea: a mobile app", memory_type=MemoryType.TASK_INSTRUCTION, status=Status.PARKED)
    store(svc, "idea: a web app", memory_type=MemoryType.TASK_INSTRUCTION, status=Status.ACTIVE)
    store(svc, "idea: a desktop app", memory_type=MemoryType.TASK_INSTRUCTION)
    assert retrieve(svc, "app idea", status=Status.PARKED) == [parked]


def test_filters_combine(svc):
    want = store(svc, "deploy on fridays is forbidden", memory_type=MemoryType.TASK_INSTRUCTION,
                 scope=Scope.PROJECT, project="acme", entity="acme.ops", tags=["rule"])
    store(svc, "deploy on fridays is forbidden", memory_type=MemoryType.TASK_INSTRUCTION,
          scope=Scope.PROJECT, project="acme", entity="acme.ops", tags=["other"])
    store(svc, "deploy on fridays is forbidden", memory_type=MemoryType.EPISODIC,
          scope=Scope.PROJECT, project="acme", entity="acme.ops", tags=["rule"])
    store(svc, "deploy on fridays is forbidden", memory_type=MemoryType.TASK_INSTRUCTION,
          scope=Scope.PROJECT, project="beta", entity="acme.ops", tags=["rule"])
    assert retrieve(svc, "friday deploys", project="acme", entity="acme", tags=["rule"],
                    memory_types=[MemoryType.TASK_INSTRUCTION]) == [want]


# -- recency, limit, related ------------------------------------------------------------------


def test_recency_weight_1_orders_by_when_things_happened(svc):
    now = datetime.now(UTC)
    ages = [400, 3, 60, 0, 20]
    ids = {age: store(svc, f"standup notes from {age} days ago",
                      occurred_at=(now - timedelta(days=age)).isoformat()) for age in ages}
    found = retrieve(svc, "standup notes", recency_weight=1.0)
    assert found == [ids[a] for a in sorted(ages)]
    # recency_weight 0 is relevance alone: the order is then not the recency order
    scores = svc.retrieve_context(ALICE, RetrieveQuery(query="standup notes", recency_weight=0.0)).memories
    assert {r.memory.id for r in scores} == set(ids.values())


def test_without_occurred_at_recency_falls_back_to_the_last_change(svc):
    old = store(svc, "coffee machine is broken", occurred_at="2001-01-01")
    fresh = store(svc, "coffee machine is fixed")
    svc.update(ALICE, old, UpdateMemory(occurred_at=None))  # now it counts from this update
    ancient = store(svc, "coffee machine was installed", occurred_at="1999-05-01")
    assert retrieve(svc, "coffee machine", recency_weight=1.0)[-1] == ancient
    assert set(retrieve(svc, "coffee machine", recency_weight=1.0)[:2]) == {old, fresh}


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_limit_bounds_the_number_of_results(svc, corpus, limit):
    assert len(retrieve(svc, "team work", limit=limit)) == limit
    assert len(retrieve(svc, "", limit=limit)) == limit


@pytest.mark.parametrize("limit", [0, -1, 101])
def test_a_limit_out_of_range_is_invalid_input(svc, limit):
    with pytest.raises(InvalidInput):
        svc.retrieve_context(ALICE, RetrieveQuery(query="x", limit=limit))


def test_include_related_adds_linked_memories_in_both_directions(svc):
    hub = store(svc, "the zeppelin project kickoff happened in march")
    supports = store(svc, "budget approved by finance")
    refined_by = store(svc, "timeline agreed with the vendor")
    deleted = store(svc, "an old draft of the plan")
    svc.link(ALICE, hub, supports, LinkType.SUPPORTS)
    svc.link(ALICE, refined_by, hub, LinkType.REFINES)
    svc.link(ALICE, hub, deleted, LinkType.SUPERSEDES)
    svc.delete(ALICE, deleted)

    [top] = svc.retrieve_context(ALICE, RetrieveQuery(query="zeppelin kickoff", limit=1,
                                                      include_related=True)).memories
    assert top.memory.id == hub
    assert {m.id for m in top.related} == {supports, refined_by}
    [plain] = svc.retrieve_context(ALICE, RetrieveQuery(query="zeppelin kickoff", limit=1)).memories
    assert plain.related == []
    assert {(l.source_id, l.target_id) for l in plain.memory.links} >= {(hub, supports), (refined_by, hub)}


# -- hostile queries --------------------------------------------------------------------------

NASTY = ['"', '""', '"unbalanced', "AND", "OR", "NOT", "a AND", "AND OR NOT", "*", "dep*", "NEAR(",
         "NEAR(a b, 2)", "(", ")", "((a)", "a)", "col:term", "text:secret", "^start", "-minus", "+plus",
         "{a b}", "[x]", "😀", "🦘 kangaroo 🦘", "the of and", "a", "   ", "", "\x00", "'; DROP TABLE memories; --",
         "_", "__", "%", "\\", "ǅ ǈ", "١٢٣", "naïve café", "x" * 4000, "ab\u0301c", "\u200b"]


@pytest.mark.parametrize("query", NASTY, ids=range(len(NASTY)))
def test_fts_syntax_in_a_query_never_errors(svc, corpus, query):
    floored = svc.retrieve_context(ALICE, RetrieveQuery(query=query, limit=5))
    result = svc.retrieve_context(ALICE, RetrieveQuery(query=query, limit=5, min_score=0.0))
    assert len(floored.memories) <= len(result.memories) <= 5
    if query.strip():
        # without the floor every non-blank query ranks something: the dense side always answers
        assert result.memories


def test_a_query_of_only_stop_words_still_matches_those_words(svc):
    only = store(svc, "to be or not to be")
    store(svc, "hamlet prince of denmark")
    assert retrieve(svc, "to be", recency_weight=0.0)[0] == only


def test_a_query_longer_than_4096_bytes_is_invalid_input(svc):
    with pytest.raises(InvalidInput):
        svc.retrieve_context(ALICE, RetrieveQuery(query="é" * 2049))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=st.text(max_size=40), entity=st.none() | st.from_regex(r"[a-z_%]{1,5}(\.[a-z_%]{1,5})?", fullmatch=True))
def test_any_text_as_a_query_ranks_without_error(svc, corpus, query, entity):
    try:
        result = svc.retrieve_context(ALICE, RetrieveQuery(query=query, limit=3, entity=entity))
    except InvalidInput as error:  # only the entity name may be refused, never the query
        assert entity is not None and "%" in entity, error
        return
    assert len(result.memories) <= 3


# -- point in time ------------------------------------------------------------------------


def test_as_of_a_seq_answers_from_the_past(svc):
    log = svc.users.get(ALICE.identity).log
    first = store(svc, "the launch is planned for june")
    k = log.last_seq()
    svc.update(ALICE, first, UpdateMemory(text="the launch moved to september"))
    later = store(svc, "the launch party is at the office")

    past = svc.retrieve_context(ALICE, RetrieveQuery(query="launch", as_of=k)).memories
    assert [(r.memory.id, r.memory.text) for r in past] == [(first, "the launch is planned for june")]
    now = svc.retrieve_context(ALICE, RetrieveQuery(query="launch")).memories
    assert {r.memory.id: r.memory.text for r in now} == {first: "the launch moved to september",
                                                         later: "the launch party is at the office"}
    assert svc.retrieve_context(ALICE, RetrieveQuery(query="launch", as_of=0)).memories == []
    assert len(svc.retrieve_context(ALICE, RetrieveQuery(query="launch", as_of=10**6)).memories) == 2


def test_as_of_a_time_answers_from_the_past(svc):
    log = svc.users.get(ALICE.identity).log
    first = store(svc, "the launch is planned for june")
    then = log.get_event(log.last_seq()).recorded_at
    svc.update(ALICE, first, UpdateMemory(text="the launch moved to september"))
    store(svc, "the launch party is at the office")

    stamp = datetime.fromisoformat(then.replace("Z", "+00:00"))
    for as_of in (then, stamp.astimezone(UTC).isoformat(),
                  stamp.astimezone(datetime.now().astimezone().tzinfo).isoformat(),
                  stamp.astimezone(UTC).replace(tzinfo=None).isoformat()):
        past = svc.retrieve_context(ALICE, RetrieveQuery(query="launch", as_of=as_of))
        assert [(r.memory.id, r.memory.text) for r in past.memories] == [(first, "the launch is planned for june")], as_of
    before_anything = (stamp - timedelta(days=1)).isoformat()
    assert svc.retrieve_context(ALICE, RetrieveQuery(query="launch", as_of=before_anything)).memories == []
    with pytest.raises(InvalidInput):
        svc.retrieve_context(ALICE, RetrieveQuery(query="launch", as_of="last tuesday"))


def test_as_of_applies_the_filters_to_the_past_state(svc):
    log = svc.users.get(ALICE.identity).log
    memory = store(svc, "prefer tabs", tags=["style"], entity="acme")
    k = log.last_seq()
    svc.update(ALICE, memory, UpdateMemory(tags=["old"], entity="beta"))
    assert retrieve(svc, "tabs", tags=["style"], entity="acme", as_of=k) == [memory]
    assert retrieve(svc, "tabs", tags=["style"], entity="acme") == []
    assert retrieve(svc, "tabs", tags=["old"], entity="beta", as_of=k) == []


def _lexical_hits(svc: MemoryService, query: str, config) -> set[str]:
    from memory.commands import MemoryFilter
    from projections.ranking import rank_memories

    store_ = svc.users.get(ALICE.identity)
    store_.catch_up_embeddings()  # as retrieve_context does before ranking
    ranked = rank_memories(store_.view.db, store_.view.embeddings.index, query, None, MemoryFilter(), 50, 0.0,
                           datetime.now(UTC), config)
    return {r.memory_id for r in ranked if r.bm25 is not None}


def test_a_word_in_more_memories_than_max_postings_is_left_out_of_the_match(svc):
    from projections.ranking import DEFAULT_CONFIG

    for i in range(24):
        store(svc, f"Unrelated note number {i} about invoices")
    gardens = {store(svc, f"Note {i}: watered the garden") for i in range(5)}
    # Stored last, after a garden note: "garden" reaches it through its context column only.
    zucchini = store(svc, "The zucchini finally flowered")
    # "garden" is in 5 of 30 memories: under a fifth, so matched by default ...
    assert _lexical_hits(svc, "garden zucchini", DEFAULT_CONFIG) == gardens | {zucchini}
    # ... and left out once more memories than max_postings hold it.
    capped = msgspec.structs.replace(DEFAULT_CONFIG, max_postings=4)
    assert _lexical_hits(svc, "garden zucchini", capped) == {zucchini}
    # When every word is that common, the rarest one is still matched.
    assert _lexical_hits(svc, "garden invoices", capped) == gardens | {zucchini}


def test_a_query_vector_handed_over_as_a_callable_ranks_as_the_vector_itself(svc, corpus, embedder):
    from memory.commands import MemoryFilter
    from projections.ranking import rank_memories

    store_ = svc.users.get(ALICE.identity)
    store_.catch_up_embeddings()  # as retrieve_context does before ranking
    now = datetime.now(UTC)
    query = "which nuts make her sick"
    vector = embedder.embed_query(query)
    asked = []

    def later():
        asked.append(True)
        return vector

    args = (store_.view.db, store_.view.embeddings.index, query)
    assert rank_memories(*args, later, MemoryFilter(), 5, 0.1, now) == rank_memories(*args, vector, MemoryFilter(), 5, 0.1, now)
    assert asked == [True]


def test_the_postings_budget_keeps_the_rarest_words_and_scores_only_the_newest_matches(svc):
    from projections.ranking import DEFAULT_CONFIG

    olds = [store(svc, f"Old invoice {i} for the garden shed") for i in range(6)]
    news = [store(svc, f"New invoice {i} paid on time") for i in range(3)]
    shed = store(svc, "The shed roof leaks")
    budget = msgspec.structs.replace(DEFAULT_CONFIG, common_word_share=1.0, postings_budget=4)
    # "shed" (7 memories) does not fit beside "roof" (1): only the rarest word is matched.
    assert _lexical_hits(svc, "roof shed", budget) == {shed}
    # One word in 10 memories (the shed note holds it in its context column: the invoice before
    # it), a budget of 4: only the 4 newest of them are scored.
    assert _lexical_hits(svc, "invoice", budget) == set(news) | {shed}
    # Within the budget every match is scored, as without one.
    assert _lexical_hits(svc, "invoice", DEFAULT_CONFIG) == set(olds) | set(news) | {shed}


@pytest.mark.parametrize("depth", [2, 5, 40])
@pytest.mark.parametrize("filters", [{}, {"project": "apollo", "scope": "project"}, {"tags": ["rare"]},
                                     {"include_superseded": True}])
def test_dense_candidates_are_exactly_the_nearest_memories_the_filters_allow(svc, embedder, depth, filters):
    """Fetched unfiltered and then filtered, or masked when too few pass: the same answer as
    masking the whole index, for a narrow filter as for the default (superseded left out)."""
    from memory.commands import MemoryFilter
    from projections.ranking import _dense, filter_sql

    texts = [f"Travel note {i}: the train to Lyon leaves at {i} o'clock" for i in range(30)]
    ids = [store(svc, text) for text in texts[:20]]
    ids += [store(svc, text, scope=Scope.PROJECT, project="apollo") for text in texts[20:25]]
    ids += [store(svc, text, tags=["rare"]) for text in texts[25:]]
    # The nearest memories retired: the default filter must look past them.
    store(svc, "When does the train to Lyon leave?", supersedes=ids[:8])
    store_ = svc.users.get(ALICE.identity)
    store_.catch_up_embeddings()
    db, index = store_.view.db, store_.view.embeddings.index
    where, args = filter_sql(MemoryFilter(**filters))
    vector = embedder.embed_query("what time is the train to Lyon")

    allowed = {r[0] for r in db.execute(f"SELECT m.id FROM memories m WHERE {where}", args)}
    assert _dense(db, index, vector, depth, where, args) == dict(index.search(vector, depth, allowed))
