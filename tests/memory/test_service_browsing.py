"""MemoryService for a person browsing their own memory: the filtered, paged list, the log as a
timeline newest first, and the chain check, each bounded and each recorded as a read."""

import sqlite3
from pathlib import Path

import pytest

from memory.commands import StoreMemory
from memory.errors import InvalidInput
from memory.identity import LOCAL_ISSUER, Identity
from memory.log import log_path
from memory.model import MemoryType, Scope
from memory.service import Caller, MemoryService

ALICE = Caller(Identity(LOCAL_ISSUER, "alice"), client_id="web")
BOB = Caller(Identity(LOCAL_ISSUER, "bob"), client_id="web")


@pytest.fixture
def service(data_dir: Path, embedder) -> MemoryService:
    svc = MemoryService(data_dir, embedder)
    yield svc
    svc.close()


def test_the_list_pages_through_every_live_memory_newest_first_and_only_the_callers(service: MemoryService):
    stored = [service.store(ALICE, StoreMemory(text=f"Alice note {i}")).id for i in range(5)]
    service.store(BOB, StoreMemory(text="Bob note"))
    service.delete(ALICE, stored[0])

    first = service.list_memories(ALICE, limit=2)
    second = service.list_memories(ALICE, cursor=first.next_cursor, limit=2)

    assert [m.id for m in first.memories + second.memories] == stored[:0:-1]
    assert second.next_cursor is None


def test_the_list_filters_exactly_by_type_scope_project_entity_and_tag(service: MemoryService):
    tea = service.store(ALICE, StoreMemory(text="Likes tea", memory_type=MemoryType.CORE_IDENTITY,
                                           entity="alice.food", tags=["drinks"])).id
    plan = service.store(ALICE, StoreMemory(text="Ship v2", scope=Scope.PROJECT, project="atlas",
                                            entity="atlas.release")).id
    service.store(ALICE, StoreMemory(text="Global note"))

    def ids(**filters) -> list[str]:
        return [m.id for m in service.list_memories(ALICE, **filters).memories]

    assert ids(memory_type=MemoryType.CORE_IDENTITY) == [tea]
    assert ids(scope=Scope.PROJECT) == ids(project="atlas") == [plan]
    assert ids(entity="alice") == [tea] and ids(tag="drinks") == [tea]
    with pytest.raises(InvalidInput):
        service.list_memories(ALICE, limit=101)


def test_the_timeline_is_the_log_newest_first_in_bounded_pages_and_records_its_own_read(service: MemoryService):
    for i in range(4):
        service.store(ALICE, StoreMemory(text=f"Alice note {i}"))

    first = service.timeline(ALICE, limit=3)
    rest = service.timeline(ALICE, cursor=first.next_cursor, limit=3)

    assert [e.seq for e in first.entries] == [5, 4, 3] and first.entries[0].type == "memories.read"
    assert [e.seq for e in rest.entries] == [2, 1] and rest.next_cursor is None
    assert rest.entries[-1].payload["text"] == "Alice note 0"


def test_the_chain_of_a_persons_log_verifies_with_its_event_count(service: MemoryService):
    service.store(ALICE, StoreMemory(text="Alice note"))

    status = service.verify_chain(ALICE)

    assert status.ok and status.event_count == 1 and not status.problems


def test_a_second_chain_check_verifies_only_the_new_events_and_still_counts_them_all(service: MemoryService):
    service.store(ALICE, StoreMemory(text="Alice note"))
    first = service.verify_chain(ALICE)
    service.store(ALICE, StoreMemory(text="Alice note two"))
    second = service.verify_chain(ALICE)
    assert first.ok and first.event_count == 1
    assert second.ok and second.event_count == 2 and second.head_hash != first.head_hash

    # A new event that does not chain onto the verified head is caught, naming its seq.
    service.store(ALICE, StoreMemory(text="Alice note three"))
    db = sqlite3.connect(log_path(service.data_dir, ALICE.identity))
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute("UPDATE events SET signature = zeroblob(64) WHERE seq = 3")
    db.commit()
    db.close()
    third = service.verify_chain(ALICE)
    assert not third.ok and any(p.startswith("seq 3:") for p in third.problems)
