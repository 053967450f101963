"""MemoryService keeps a person's memory clean on store: a duplicate of a live memory answers with
that memory instead of a second one (and the attempt is an event), every store lists the similar
memories, and superseded memories leave retrieval but not the history."""

from pathlib import Path

import pytest

from memory.commands import RetrieveQuery, StoreMemory, UpdateMemory
from memory.errors import InvalidInput
from memory.identity import LOCAL_ISSUER, Identity
from memory.ids import new_uuid7
from memory.model import Status
from memory.service import Caller, MemoryService

ALICE = Caller(Identity(LOCAL_ISSUER, "alice"), client_id="cli")
BOB = Caller(Identity(LOCAL_ISSUER, "bob"), client_id="cli")


@pytest.fixture
def service(data_dir: Path, embedder) -> MemoryService:
    svc = MemoryService(data_dir, embedder)
    yield svc
    svc.close()


def _events(service: MemoryService, caller: Caller) -> list[str]:
    return [e.type for e in service.users.get(caller.identity).log.read_events()]


def test_a_text_equal_after_case_and_whitespace_answers_with_the_existing_memory_and_records_the_attempt(service):
    first = service.store_memory(ALICE, StoreMemory(text="I take my coffee black, no sugar"))
    again = service.store_memory(ALICE, StoreMemory(text="  i take my COFFEE   black, no sugar "))

    assert first.duplicate_of is None
    assert again.duplicate_of == first.memory.id and again.memory.id == first.memory.id
    assert _events(service, ALICE) == ["memory.stored", "memory.deduplicated"]
    history = service.history(ALICE, first.memory.id)
    assert [e.type for e in history.entries] == ["memory.stored", "memory.deduplicated"]
    assert history.entries[1].payload["match"] == "exact"
    assert service.list_memories(ALICE).memories == [first.memory]


def test_a_near_duplicate_is_caught_but_a_different_number_or_order_is_a_new_fact(service):
    first = service.store_memory(ALICE, StoreMemory(text="The Acme launch moved to March."))
    near = service.store_memory(ALICE, StoreMemory(text="The Acme launch was moved to March."))
    flight = service.store_memory(ALICE, StoreMemory(text="Flight to Lisbon on 2026-05-08."))
    other_flight = service.store_memory(ALICE, StoreMemory(text="Flight to Lisbon on 2026-06-08."))
    bob = service.store_memory(ALICE, StoreMemory(text="Bob prefers email over phone calls."))
    swapped = service.store_memory(ALICE, StoreMemory(text="Bob prefers phone calls over email."))

    assert near.duplicate_of == first.memory.id
    assert other_flight.duplicate_of is None and other_flight.memory.id != flight.memory.id
    assert swapped.duplicate_of is None and swapped.memory.id != bob.memory.id
    # Each new fact names the close one it was not merged with.
    assert flight.memory.id in [m.id for m in other_flight.similar]
    assert bob.memory.id in [m.id for m in swapped.similar]
    # The same numbers in another order are another fact too.
    note = service.store_memory(ALICE, StoreMemory(text="Note number 2 by writer 0"))
    swapped_numbers = service.store_memory(ALICE, StoreMemory(text="Note number 0 by writer 2"))
    assert swapped_numbers.duplicate_of is None and swapped_numbers.memory.id != note.memory.id


def test_the_same_text_about_another_entity_or_in_another_scope_or_another_persons_is_not_a_duplicate(service):
    service.store(ALICE, StoreMemory(text="Prefers answers in bullet points.", entity="work"))
    home = service.store_memory(ALICE, StoreMemory(text="Prefers answers in bullet points.", entity="home"))
    bobs = service.store_memory(BOB, StoreMemory(text="Prefers answers in bullet points.", entity="work"))

    assert home.duplicate_of is None
    assert bobs.duplicate_of is None and bobs.similar == []


def test_allow_duplicate_stores_anyway_and_names_the_twin_as_similar(service):
    first = service.store(ALICE, StoreMemory(text="Runs a half marathon every spring."))
    second = service.store_memory(ALICE, StoreMemory(text="Runs a half marathon every spring.", allow_duplicate=True))

    assert second.duplicate_of is None and second.memory.id != first.id
    assert second.similar[0].id == first.id and second.similar[0].score > 0.99


def test_a_deleted_or_superseded_memory_is_no_duplicate(service):
    gone = service.store(ALICE, StoreMemory(text="Lives in Munich."))
    service.delete(ALICE, gone.id)
    again = service.store_memory(ALICE, StoreMemory(text="Lives in Munich."))
    assert again.duplicate_of is None

    newer = service.store_memory(ALICE, StoreMemory(text="Lives in Munich.", supersedes=[again.memory.id]))
    assert newer.duplicate_of is None and newer.memory.id != again.memory.id


def test_every_store_lists_at_most_three_similar_memories_closest_first(service):
    for text in ("Drinks green tea in the afternoon.", "Drinks green tea after lunch.",
                 "Likes green tea with honey.", "Drinks green tea every afternoon at four.",
                 "The billing service is written in Go."):
        service.store(ALICE, StoreMemory(text=text))
    result = service.store_memory(ALICE, StoreMemory(text="Has green tea in the afternoons."))

    assert result.duplicate_of is None
    assert 1 <= len(result.similar) <= 3
    assert [m.score for m in result.similar] == sorted((m.score for m in result.similar), reverse=True)
    assert all("tea" in m.text for m in result.similar)


def test_a_retry_with_the_same_event_id_answers_the_first_store_and_appends_nothing(service):
    event_id = new_uuid7()
    old = service.store(ALICE, StoreMemory(text="Works at Globex."))
    first = service.store_memory(ALICE, StoreMemory(text="Works at Initech now.", event_id=event_id,
                                                    supersedes=[old.id]))
    before = len(_events(service, ALICE))
    retry = service.store_memory(ALICE, StoreMemory(text="Works at Initech now.", event_id=event_id,
                                                    supersedes=[old.id]))

    assert retry.memory.id == first.memory.id == event_id and retry.duplicate_of is None
    assert len(_events(service, ALICE)) == before


def test_supersedes_on_store_marks_the_old_memory_and_retrieval_leaves_it_out_unless_asked(service):
    old = service.store(ALICE, StoreMemory(text="Alice works as a data engineer at Globex."))
    new = service.store_memory(ALICE, StoreMemory(text="Alice now works as a data scientist at Initech.",
                                                  supersedes=[old.id]))

    assert service.get(ALICE, old.id).status == Status.SUPERSEDED
    found = service.retrieve_context(ALICE, RetrieveQuery(query="where does Alice work", recency_weight=0))
    assert [r.memory.id for r in found.memories] == [new.memory.id]
    everything = service.retrieve_context(ALICE, RetrieveQuery(query="where does Alice work",
                                                               include_superseded=True))
    assert {r.memory.id for r in everything.memories} == {old.id, new.memory.id}
    # Still in its history: stored, linked to its successor, marked superseded, then read.
    assert [e.type for e in service.history(ALICE, old.id).entries][:3] == [
        "memory.stored", "memories.linked", "memory.updated"]


def test_update_memory_with_supersedes_marks_the_others_superseded(service):
    keep = service.store(ALICE, StoreMemory(text="Deploys happen on Tuesdays."))
    old = service.store(ALICE, StoreMemory(text="Deploys happen on Thursdays."))

    service.update(ALICE, keep.id, UpdateMemory(text="Deploys happen on Tuesdays and Thursdays.",
                                                supersedes=[old.id]))
    assert service.get(ALICE, old.id).status == Status.SUPERSEDED
    found = service.retrieve_context(ALICE, RetrieveQuery(query="when are deploys"))
    assert [r.memory.id for r in found.memories] == [keep.id]


def test_supersedes_names_only_existing_memories_of_the_caller_and_never_itself(service):
    bobs = service.store(BOB, StoreMemory(text="Bob's secret plan."))
    mine = service.store(ALICE, StoreMemory(text="Alice's plan."))
    with pytest.raises(Exception, match="no memory"):
        service.store(ALICE, StoreMemory(text="A new plan.", supersedes=[bobs.id]))
    with pytest.raises(InvalidInput, match="itself"):
        service.update(ALICE, mine.id, UpdateMemory(supersedes=[mine.id]))
    with pytest.raises(InvalidInput):
        service.store(ALICE, StoreMemory(text="Too many.", supersedes=[mine.id] * 21))
    assert _events(service, ALICE) == ["memory.stored"]


def test_a_restored_memory_is_live_again_everywhere_and_its_history_shows_delete_and_restore(service):
    memory = service.store(ALICE, StoreMemory(text="Alice keeps bees on the roof", entity="alice.hobbies"))
    service.delete(ALICE, memory.id)
    assert [m.id for m in service.list_memories(ALICE, deleted=True).memories] == [memory.id]
    assert service.retrieve_context(ALICE, RetrieveQuery(query="bees")).memories == []
    assert [e.name for e in service.list_entities(ALICE, "alice").entities if e.memory_count] == []

    restored = service.restore(ALICE, memory.id)

    assert restored.deleted is False and service.list_memories(ALICE, deleted=True).memories == []
    assert [r.memory.id for r in service.retrieve_context(ALICE, RetrieveQuery(query="bees")).memories] == [memory.id]
    assert service.store_memory(ALICE, StoreMemory(text="alice keeps bees on the roof",
                                                   entity="alice.hobbies")).duplicate_of == memory.id
    assert [e.name for e in service.list_entities(ALICE, "alice").entities if e.memory_count] == ["alice.hobbies"]
    types = [e.type for e in service.history(ALICE, memory.id).entries]
    assert types[:2] == ["memory.stored", "memory.deleted"] and "memory.restored" in types
    with pytest.raises(InvalidInput, match="not deleted"):
        service.restore(ALICE, memory.id)
    # Rebuilt from the log, every projection says the same.
    store = service.users.get(ALICE.identity)
    live = store.view.projections.snapshot()
    store.rebuild()
    assert store.view.projections.snapshot() == live
