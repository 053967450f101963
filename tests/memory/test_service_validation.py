"""MemoryService: bad input is refused with a clear message and appends nothing; good input works.

Commands arrive as adapters build them: decoded from JSON-like dicts by `parse_command` (which
enforces types, enums, ranges and unknown fields), then handed to the service (which enforces
what types cannot say). Every refusal is checked against the log: its last seq must not move.
"""

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memory.commands import RetrieveQuery, SessionItem, StoreMemory, SyncSession, UpdateMemory
from memory.errors import IdempotencyConflict, InvalidInput, MemoryServiceError, NotFound
from memory.identity import LOCAL_ISSUER, Identity
from memory.model import Link, LinkType, MemoryType, Scope, Status
from memory.service import Caller, MemoryService
from memory.validation import parse_command

ALICE = Caller(Identity(LOCAL_ISSUER, "alice"), client_id="claude-desktop")
BOB = Caller(Identity(LOCAL_ISSUER, "bob"), client_id="claude-desktop")


@pytest.fixture
def service(data_dir: Path, embedder) -> MemoryService:
    svc = MemoryService(data_dir, embedder)
    yield svc
    svc.close()


@pytest.fixture
def existing(service: MemoryService) -> str:
    """An existing memory of alice's."""
    return service.store(ALICE, StoreMemory(text="Alice deploys on Fridays only after the tests pass")).id


def last_seq(service: MemoryService, caller: Caller = ALICE) -> int:
    return service.users.get(caller.identity).log.last_seq()


def assert_refused(service: MemoryService, call: Callable[[], Any], error: type[MemoryServiceError],
                   message: str) -> str:
    """`call` raises `error` whose message matches `message`, and alice's log gains nothing."""
    before = last_seq(service)
    with pytest.raises(error, match=message) as caught:
        call()
    assert last_seq(service) == before, "a refused command appended to the log"
    return str(caught.value)


def store_dict(service: MemoryService, data: dict) -> Callable[[], Any]:
    return lambda: service.store(ALICE, parse_command(StoreMemory, data))


# -------------------------------------------------------------------------- store: refusals


@pytest.mark.parametrize(("data", "message"), [
    ({"text": "x", "memory_type": "dream"}, r"Invalid enum value 'dream' - at `\$\.memory_type`"),
    ({"text": "x", "scope": "galaxy"}, r"Invalid enum value 'galaxy' - at `\$\.scope`"),
    ({"text": "x", "status": "maybe"}, r"Invalid enum value 'maybe' - at `\$\.status`"),
    ({"text": "x", "priority": 11}, r"<= 10 - at `\$\.priority`"),
    ({"text": "x", "priority": -1}, r">= 0 - at `\$\.priority`"),
    ({"text": "x", "colour": "red"}, r"unknown field `colour`"),
    ({"text": 42}, r"Expected `str`, got `int` - at `\$\.text`"),
    ({"memory_type": "episodic"}, r"missing required field `text`"),
], ids=["memory-type", "scope", "status", "priority-11", "priority-negative", "unknown-field",
        "text-not-a-string", "no-text"])
def test_a_store_command_dict_with_a_bad_field_is_refused_naming_the_field(service, data, message):
    assert_refused(service, store_dict(service, data), InvalidInput, message)


@pytest.mark.parametrize(("command", "message"), [
    (StoreMemory(text="x", scope=Scope.PROJECT), r"scope 'project' needs a project"),
    (StoreMemory(text="x", scope=Scope.TASK, project="apollo"), r"scope 'task' needs a task_id"),
    (StoreMemory(text="x", scope=Scope.TASK, project="apollo", task_id="   "), r"scope 'task' needs a task_id"),
    (StoreMemory(text=""), r"text must not be empty"),
    (StoreMemory(text=" \n\t "), r"text must not be empty"),
    (StoreMemory(text="x" * (32 * 1024 + 1)), r"text is 32769 bytes; the limit is 32768"),
    (StoreMemory(text="é" * 16385), r"text is 32770 bytes; the limit is 32768"),
    (StoreMemory(text="x", tags=[f"t{i}" for i in range(33)]), r"33 tags given; the limit is 32"),
    (StoreMemory(text="x", tags=["a" * 65]), r"each tag must have 1 to 64 characters"),
    (StoreMemory(text="x", tags=["ok", "  "]), r"each tag must have 1 to 64 characters"),
    (StoreMemory(text="x", occurred_at="yesterday"), r"occurred_at must be an ISO 8601 date or time"),
    (StoreMemory(text="x", occurred_at="2026-02-30"), r"occurred_at must be an ISO 8601 date or time"),
    (StoreMemory(text="x", event_id="not-a-uuid"), r"event_id must be a UUID"),
    (StoreMemory(text="x", event_id=""), r"event_id must be a UUID"),
], ids=["project-scope-without-project", "task-scope-without-task-id", "blank-task-id", "empty-text",
        "whitespace-text", "text-over-32k", "multibyte-text-over-32k", "33-tags", "65-char-tag", "blank-tag",
        "occurred-at-words", "occurred-at-impossible-date", "event-id-not-uuid", "event-id-empty"])
def test_a_store_command_breaking_a_rule_is_refused_with_a_clear_message(service, command, message):
    assert_refused(service, lambda: service.store(ALICE, command), InvalidInput, message)


@pytest.mark.parametrize("name", ["../etc", "a..b", "", ".hidden", "trailing.", "a/b", "two words",
                                  "semi;colon", "x" * 201])
def test_a_bad_entity_or_project_name_is_refused_wherever_it_is_given(service, name):
    not_a_name = r"is not a valid name: use letters, digits, '-' or '_'"
    assert_refused(service, lambda: service.store(ALICE, StoreMemory(text="x", entity=name)), InvalidInput,
                   r"entity .* " + not_a_name)
    assert_refused(service, lambda: service.store(ALICE, StoreMemory(text="x", scope=Scope.PROJECT, project=name)),
                   InvalidInput, r"project .* " + not_a_name)
    assert_refused(service, lambda: service.register_entity(ALICE, name), InvalidInput, not_a_name)
    assert_refused(service, lambda: service.set_project(ALICE, name), InvalidInput, not_a_name)


def test_limits_are_inclusive_at_their_edges(service):
    before = last_seq(service)
    service.store(ALICE, StoreMemory(text="x" * (32 * 1024)))
    service.store(ALICE, StoreMemory(text="  " + "y" * (32 * 1024) + "\n"))  # surrounding blanks are trimmed
    service.store(ALICE, StoreMemory(text="z", tags=[f"t{i}" for i in range(32)] + ["t0"]))  # 32 once deduplicated
    service.store(ALICE, StoreMemory(text="w", tags=["a" * 64], priority=10, entity="acme.marketing-team_2"))
    assert last_seq(service) == before + 4


def test_a_store_command_built_in_code_with_priority_11_is_refused(service):
    assert_refused(service, lambda: service.store(ALICE, StoreMemory(text="x", priority=11)), InvalidInput,
                   "priority")


def test_the_same_event_id_with_other_content_is_a_conflict_and_appends_nothing(service):
    event_id = str(uuid.uuid4())
    service.store(ALICE, StoreMemory(text="first version", event_id=event_id))
    assert_refused(service, lambda: service.store(ALICE, StoreMemory(text="second version", event_id=event_id)),
                   IdempotencyConflict, event_id)


# ----------------------------------------------------------------------- unknown memory ids

OPERATIONS: dict[str, Callable[[MemoryService, str, str], Any]] = {
    "get": lambda s, missing, _: s.get(ALICE, missing),
    "update": lambda s, missing, _: s.update(ALICE, missing, UpdateMemory(text="new text")),
    "delete": lambda s, missing, _: s.delete(ALICE, missing),
    "forget": lambda s, missing, _: s.forget(ALICE, missing),
    "link-source": lambda s, missing, known: s.link(ALICE, missing, known, LinkType.SUPPORTS),
    "link-target": lambda s, missing, known: s.link(ALICE, known, missing, LinkType.SUPPORTS),
    "history": lambda s, missing, _: s.history(ALICE, missing),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_an_unknown_memory_id_is_not_found_and_appends_nothing(service, existing, operation):
    missing = str(uuid.uuid4())
    assert_refused(service, lambda: OPERATIONS[operation](service, missing, existing), NotFound,
                   re.escape(f"no memory with id {missing!r}"))


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_another_users_memory_id_is_not_found_exactly_like_a_missing_one(service, existing, operation):
    bobs = service.store(BOB, StoreMemory(text="Bob's private note")).id
    bob_before = last_seq(service, BOB)
    missing = str(uuid.uuid4())

    foreign = assert_refused(service, lambda: OPERATIONS[operation](service, bobs, existing), NotFound, bobs)
    absent = assert_refused(service, lambda: OPERATIONS[operation](service, missing, existing), NotFound, missing)

    assert foreign.replace(bobs, "<id>") == absent.replace(missing, "<id>")
    assert last_seq(service, BOB) == bob_before
    assert service.get(BOB, bobs).text == "Bob's private note"


def test_a_deleted_memory_cannot_be_updated_deleted_or_linked_again(service, existing):
    other = service.store(ALICE, StoreMemory(text="another memory")).id
    service.delete(ALICE, existing)
    for call in (lambda: service.update(ALICE, existing, UpdateMemory(text="revived")),
                 lambda: service.delete(ALICE, existing),
                 lambda: service.link(ALICE, other, existing, LinkType.REFINES)):
        assert_refused(service, call, NotFound, "no memory with id")


@pytest.mark.parametrize("changes", [UpdateMemory(), UpdateMemory(text="  Alice deploys on Fridays only after "
                                                                       "the tests pass  "), UpdateMemory(priority=0)],
                         ids=["no-fields", "same-text", "same-priority"])
def test_an_update_that_changes_nothing_is_refused(service, existing, changes):
    assert_refused(service, lambda: service.update(ALICE, existing, changes), InvalidInput, "nothing to change")


def test_an_update_breaking_a_rule_is_refused(service, existing):
    assert_refused(service, lambda: service.update(ALICE, existing, UpdateMemory(text="  ")), InvalidInput,
                   "text must not be empty")
    assert_refused(service, lambda: service.update(ALICE, existing, UpdateMemory(tags=["x" * 65])), InvalidInput,
                   "each tag")
    assert_refused(service, lambda: service.update(ALICE, existing, parse_command(UpdateMemory, {"priority": 11})),
                   InvalidInput, r"priority")
    assert_refused(service, lambda: service.update(ALICE, existing, UpdateMemory(occurred_at="soon")),
                   InvalidInput, "occurred_at")


def test_linking_a_memory_to_itself_is_refused(service, existing):
    assert_refused(service, lambda: service.link(ALICE, existing, existing, LinkType.SUPPORTS), InvalidInput,
                   "cannot be linked to itself")


# ---------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("limit", [0, 101])
def test_a_retrieve_limit_outside_1_to_100_is_refused(service, limit):
    assert_refused(service, lambda: service.retrieve_context(ALICE, parse_command(RetrieveQuery, {"limit": limit})),
                   InvalidInput, r"at `\$\.limit`")


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_a_retrieve_query_built_in_code_with_a_bad_limit_is_refused(service, existing, limit):
    assert_refused(service, lambda: service.retrieve_context(ALICE, RetrieveQuery(limit=limit)), InvalidInput,
                   "limit")


@pytest.mark.parametrize("cursor", [-1, 2**63, 4747816975811694559232])
def test_a_seq_cursor_outside_what_sqlite_holds_is_refused_not_a_crash(service, existing, cursor):
    message = "cursor must be a seq between"
    assert_refused(service, lambda: service.history(ALICE, existing, cursor=cursor), InvalidInput, message)
    assert_refused(service, lambda: service.timeline(ALICE, cursor=cursor), InvalidInput, message)
    assert_refused(service, lambda: service.list_memories(ALICE, cursor=cursor), InvalidInput, message)


@pytest.mark.parametrize("limit", [0, 101])
def test_other_page_limits_outside_1_to_100_are_refused(service, existing, limit):
    message = "limit must be between 1 and 100"
    assert_refused(service, lambda: service.history(ALICE, existing, limit=limit), InvalidInput, message)
    assert_refused(service, lambda: service.list_entities(ALICE, limit=limit), InvalidInput, message)
    assert_refused(service, lambda: service.search(ALICE, "deploy", limit=limit), InvalidInput, message)
    assert_refused(service, lambda: service.search_entities(ALICE, "deploy", limit=limit), InvalidInput, message)


# =========================================================================== what works


def test_storing_twice_with_one_event_id_returns_the_same_memory_and_appends_once(service):
    event_id = str(uuid.uuid4())
    before = last_seq(service)
    first = service.store(ALICE, StoreMemory(text="Retry-safe note", tags=["a"], event_id=event_id))
    second = service.store(ALICE, StoreMemory(text="Retry-safe note", tags=["a"], event_id=event_id))

    assert first.id == second.id == event_id
    assert first == second
    assert last_seq(service) == before + 1


def test_update_delete_forget_and_link_change_what_get_returns(service, existing):
    other = service.store(ALICE, StoreMemory(text="The deploy pipeline runs on GitHub Actions")).id

    updated = service.update(ALICE, existing, UpdateMemory(text="Alice deploys any weekday", priority=4,
                                                           tags=["deploy"], status=Status.ACTIVE))
    assert (updated.text, updated.priority, updated.tags, updated.status) == (
        "Alice deploys any weekday", 4, ["deploy"], Status.ACTIVE)
    assert service.get(ALICE, existing).text == "Alice deploys any weekday"

    link = service.link(ALICE, other, existing, LinkType.DEPENDS_ON)
    assert link == Link(other, existing, LinkType.DEPENDS_ON)
    assert link in service.get(ALICE, existing).links and link in service.get(ALICE, other).links

    deleted = service.delete(ALICE, other, reason="moved to GitLab")
    assert deleted.deleted is True

    result = service.forget(ALICE, existing)
    assert result.memory_id == existing and result.redacted_seqs
    with pytest.raises(NotFound):
        service.get(ALICE, existing)
    log = service.users.get(ALICE.identity).log
    assert all(log.get_event(seq).redacted for seq in result.redacted_seqs)
    assert log.get_event(result.tombstone_seq).type == "memory.forgotten"
    assert service.get(ALICE, other).links == []  # the forgotten memory's link went with it


def test_a_soft_deleted_memory_is_hidden_from_retrieval_but_get_still_returns_it(service):
    keep = service.store(ALICE, StoreMemory(text="The cat is called Miso")).id
    gone = service.store(ALICE, StoreMemory(text="The cat is called Pixel")).id
    service.delete(ALICE, gone)

    found = service.retrieve_context(ALICE, RetrieveQuery(query="what is the cat called", limit=10))
    assert [r.memory.id for r in found.memories] == [keep]
    assert gone not in {h.id for h in service.search(ALICE, "cat Pixel")}
    memory = service.get(ALICE, gone)
    assert memory.deleted is True and memory.text == "The cat is called Pixel"


def test_history_is_paginated_with_a_cursor_until_the_last_page(service, existing):
    for i in range(4):
        service.update(ALICE, existing, UpdateMemory(priority=i + 1))
    service.get(ALICE, existing)  # reads that returned the memory are part of its history too

    pages, cursor = [], 0
    while True:
        page = service.history(ALICE, existing, cursor=cursor, limit=2)
        pages.append(page)
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.entries[-1].seq
        cursor = page.next_cursor

    entries = [e for p in pages for e in p.entries]
    assert [len(p.entries) for p in pages] == [2, 2, 2]
    assert [e.type for e in entries] == ["memory.stored"] + ["memory.updated"] * 4 + ["memories.read"]
    assert [e.seq for e in entries] == sorted({e.seq for e in entries})
    assert entries[0].payload["text"] == "Alice deploys on Fridays only after the tests pass"
    assert [e.payload["priority"] for e in entries[1:5]] == [1, 2, 3, 4]
    assert entries[0].actor == "alice" and entries[0].client_id == "claude-desktop"
    assert entries[-1].payload["returned_count"] == 1


def test_list_entities_pages_with_a_cursor_in_name_order(service):
    for name in ["echo", "alpha", "delta", "charlie", "bravo"]:
        service.register_entity(ALICE, name, description=f"the {name} team")
    service.store(ALICE, StoreMemory(text="Charlie's backend squad owns billing", entity="charlie.backend"))

    first = service.list_entities(ALICE, limit=2)
    second = service.list_entities(ALICE, cursor=first.next_cursor, limit=2)
    third = service.list_entities(ALICE, cursor=second.next_cursor, limit=2)

    assert [e.name for e in first.entities] == ["alpha", "bravo"] and first.next_cursor == "bravo"
    assert [e.name for e in second.entities] == ["charlie", "charlie.backend"]
    assert second.next_cursor == "charlie.backend"
    assert [e.name for e in third.entities] == ["delta", "echo"] and third.next_cursor is None
    assert third.entities[0].description == "the delta team" and third.entities[0].registered
    assert [e.name for e in service.list_entities(ALICE, prefix="charlie").entities] == ["charlie", "charlie.backend"]


def test_set_project_needs_a_known_project_and_then_becomes_the_clients_default(service):
    assert_refused(service, lambda: service.set_project(ALICE, "apollo"), NotFound, "no project 'apollo'")

    service.store(ALICE, StoreMemory(text="Apollo ships on Tuesdays", scope=Scope.PROJECT, project="apollo",
                                     memory_type=MemoryType.PROJECT_CONTEXT))
    service.store(ALICE, StoreMemory(text="Gemini ships on Mondays", scope=Scope.PROJECT, project="gemini"))
    summary = service.set_project(ALICE, "apollo")
    assert summary.project == "apollo"
    assert summary.counts_by_type == {"project_context": 1}

    result = service.retrieve_context(ALICE, RetrieveQuery(query="when do we ship"))
    assert result.project == "apollo"
    assert [r.memory.text for r in result.memories] == ["Apollo ships on Tuesdays"]
    # the default belongs to the client that set it, and a project-scoped store may now omit it
    assert service.retrieve_context(Caller(ALICE.identity, client_id="other-client"),
                                    RetrieveQuery(query="when do we ship")).project is None
    assert service.store(ALICE, StoreMemory(text="Apollo freeze in May", scope=Scope.PROJECT)).project == "apollo"


def test_sync_session_upserts_status_updates_by_entity(service):
    first = service.sync_session(ALICE, SyncSession(status_updates=[SessionItem(text="CI is red", entity="ci")]))
    assert len(first.created) == 1 and first.updated == []

    second = service.sync_session(ALICE, SyncSession(status_updates=[SessionItem(text="CI is green", entity="ci")]))
    assert second.created == [] and second.updated == first.created

    memory = service.get(ALICE, first.created[0])
    assert memory.text == "CI is green"
    assert "status" in memory.tags and memory.entity == "ci"
    assert_refused(service, lambda: service.sync_session(ALICE, SyncSession(
        status_updates=[SessionItem(text="no entity")])), InvalidInput, "needs an entity")
    assert_refused(service, lambda: service.sync_session(ALICE, SyncSession()), InvalidInput, "nothing to sync")


def test_sync_session_supersedes_marks_the_old_memory_superseded_and_links_it(service):
    old = service.store(ALICE, StoreMemory(text="We use MySQL", memory_type=MemoryType.PROJECT_CONTEXT)).id

    result = service.sync_session(ALICE, SyncSession(decisions=[SessionItem(text="We use Postgres", supersedes=old)]))

    [new] = result.created
    assert result.superseded == [old]
    old_memory = service.get(ALICE, old)
    assert old_memory.status == Status.SUPERSEDED
    assert Link(new, old, LinkType.SUPERSEDES) in old_memory.links
    assert service.get(ALICE, new).status == Status.ACTIVE
    missing = str(uuid.uuid4())
    assert_refused(service, lambda: service.sync_session(ALICE, SyncSession(
        decisions=[SessionItem(text="x", supersedes=missing)])), NotFound, missing)
