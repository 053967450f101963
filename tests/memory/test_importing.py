"""Importing other tools' exports: each format in its real shape becomes ordinary memory.stored
events with their source, a second import adds nothing, a bad record refuses the whole file, and
duplicates go through the store's detector."""

import json
from pathlib import Path

import pytest

from memory.audit import export_user
from memory.commands import StoreMemory, UpdateMemory
from memory.errors import InvalidInput
from memory.identity import LOCAL_ISSUER, Identity
from memory.model import Status
from memory.service import Caller, MemoryService

ALICE = Caller(Identity(LOCAL_ISSUER, "alice"), client_id="cli")
BOB = Caller(Identity(LOCAL_ISSUER, "bob"), client_id="cli")

# As the MCP reference server (src/memory) writes memory.jsonl: one JSON object a line, entities
# with their observations and relations between entity names.
SERVER_MEMORY = "\n".join(json.dumps(r) for r in [
    {"type": "entity", "name": "John Smith", "entityType": "person",
     "observations": ["Speaks fluent Spanish", "Graduated in 2019"]},
    {"type": "entity", "name": "Anthropic", "entityType": "organization", "observations": ["Based in San Francisco"]},
    {"type": "relation", "from": "John Smith", "to": "Anthropic", "relationType": "works_at"},
]) + "\n"

# As mem0's Memory.get_all() answers (v1.1 output format).
MEM0 = json.dumps({"results": [
    {"id": "892db2ae-06d9-49e5-8b3e-585ef9b85b8e", "memory": "Is a vegetarian and allergic to nuts",
     "hash": "a4a2a0b6e1a0d5d6f7d1c7e1a0f1d9a1", "metadata": None, "categories": ["food", "health"],
     "created_at": "2024-07-20T01:42:47.284063-07:00", "updated_at": None, "user_id": "alice"},
    {"id": "7b5a1b4c-2c3d-4e5f-8a9b-0c1d2e3f4a5b", "memory": "Loves sci-fi movies",
     "hash": "b5b3b1c7f2b1e6e7", "metadata": {"source": "chat"}, "categories": ["entertainment"],
     "created_at": "2024-07-21T09:00:00-07:00", "updated_at": "2024-07-22T10:00:00-07:00", "user_id": "alice"},
]})

JSONL = "\n".join(json.dumps(r) for r in [
    {"text": "Prefers answers in bullet points.", "memory_type": "core_identity"},
    {"text": "We chose Postgres for billing.", "memory_type": "project_context", "scope": "project",
     "project": "acme", "entity": "acme.billing", "tags": ["decision"], "occurred_at": "2026-03-02"},
]) + "\n"


@pytest.fixture
def service(data_dir: Path, embedder) -> MemoryService:
    svc = MemoryService(data_dir, embedder)
    yield svc
    svc.close()


def _stored(service: MemoryService, caller: Caller) -> list:
    return [e for e in service.users.get(caller.identity).log.read_events() if e.type == "memory.stored"]


def test_server_memory_observations_become_memories_of_their_entity_and_relations_link_them(service):
    report = service.import_memories(ALICE, "server-memory", SERVER_MEMORY.encode())

    assert report.records == 4 and len(report.imported) == 4 and report.links == 2
    events = _stored(service, ALICE)
    by_text = {e.payload.text: e.payload for e in events}
    assert by_text["Speaks fluent Spanish"].entity == "John_Smith"
    assert by_text["Speaks fluent Spanish"].tags == ["person"]
    assert by_text["Speaks fluent Spanish"].imported_from.format == "server-memory"
    relation = by_text["John Smith works at Anthropic"]
    memory = service.get(ALICE, relation.memory_id)
    assert {link.target_id for link in memory.links} == {by_text["Speaks fluent Spanish"].memory_id,
                                                         by_text["Based in San Francisco"].memory_id}


def test_mem0_memories_keep_their_id_categories_and_timestamps(service):
    report = service.import_memories(ALICE, "mem0", MEM0.encode())

    assert len(report.imported) == 2
    [veg] = [e.payload for e in _stored(service, ALICE) if e.payload.text.startswith("Is a vegetarian")]
    assert veg.tags == ["food", "health"]
    assert veg.occurred_at == "2024-07-20T08:42:47.284063Z"
    assert veg.imported_from.original_id == "892db2ae-06d9-49e5-8b3e-585ef9b85b8e"
    assert veg.imported_from.created_at == "2024-07-20T08:42:47.284063Z"
    # A bare list, as older mem0 versions answer, is read the same way.
    again = service.import_memories(BOB, "mem0", json.dumps(json.loads(MEM0)["results"]).encode())
    assert len(again.imported) == 2


def test_jsonl_carries_every_optional_field(service):
    service.import_memories(ALICE, "jsonl", JSONL.encode())

    [billing] = [e.payload for e in _stored(service, ALICE) if e.payload.project]
    assert (billing.scope.value, billing.project, billing.entity, billing.tags) == ("project", "acme", "acme.billing",
                                                                                    ["decision"])
    assert billing.occurred_at == "2026-03-02T00:00:00.000000Z"
    # Status and priority are fields of a memory like the others: a record may give them.
    assert (billing.status.value, billing.priority) == ("active", 0)
    service.import_memories(BOB, "jsonl", b'{"text": "Migrate the CI", "status": "parked", "priority": 9}\n')
    [parked] = [e.payload for e in _stored(service, BOB)]
    assert (parked.status.value, parked.priority) == ("parked", 9)
    with pytest.raises(InvalidInput, match="line 1.*priority"):
        service.import_memories(BOB, "jsonl", b'{"text": "Too eager", "priority": 11}\n')


def test_an_export_bundle_moves_a_persons_live_memories_to_another(service, data_dir: Path, tmp_path: Path):
    kept = service.store(ALICE, StoreMemory(text="Alice plays the cello.", priority=4))
    service.update(ALICE, kept.id, UpdateMemory(status=Status.PARKED))
    gone = service.store(ALICE, StoreMemory(text="Alice lived in Oslo."))
    service.delete(ALICE, gone.id)
    bundle = tmp_path / "alice.json"
    export_user(data_dir, ALICE.identity, service.keys, bundle)

    report = service.import_memories(BOB, "export", bundle.read_bytes())

    assert [e.payload.text for e in _stored(service, BOB)] == ["Alice plays the cello."]
    # As the memory is now: its update applied, its priority kept.
    assert (_stored(service, BOB)[0].payload.status, _stored(service, BOB)[0].payload.priority) == (Status.PARKED, 4)
    assert _stored(service, BOB)[0].payload.imported_from.original_id == kept.id
    assert report.imported[0] != kept.id  # a memory id of Bob's own

    tampered = bundle.read_text().replace(kept.id[:8], "00000000", 1)
    with pytest.raises(InvalidInput, match="nothing was imported"):
        service.import_memories(BOB, "export", tampered.encode())


def test_importing_the_same_file_twice_adds_nothing(service):
    for data, name in ((SERVER_MEMORY, "server-memory"), (MEM0, "mem0"), (JSONL, "jsonl")):
        service.import_memories(ALICE, name, data.encode())
    head = service.users.get(ALICE.identity).log.last_seq()

    for data, name in ((SERVER_MEMORY, "server-memory"), (MEM0, "mem0"), (JSONL, "jsonl")):
        report = service.import_memories(ALICE, name, data.encode())
        assert report.imported == [] and report.already_imported == report.records and report.links == 0
    assert service.users.get(ALICE.identity).log.last_seq() == head


def test_a_malformed_line_is_named_and_nothing_of_the_file_is_imported(service):
    bad = JSONL + '{"text": "fine"}\n{"text": ""}\n'
    with pytest.raises(InvalidInput, match="line 4: text must not be empty; nothing was imported"):
        service.import_memories(ALICE, "jsonl", bad.encode())
    with pytest.raises(InvalidInput, match="line 2: not JSON"):
        service.import_memories(ALICE, "server-memory", (SERVER_MEMORY.splitlines()[0] + "\n{oops\n").encode())
    with pytest.raises(InvalidInput, match="record 1: memory must be a non-empty string"):
        service.import_memories(ALICE, "mem0", b'[{"id": "1", "memory": null}]')
    with pytest.raises(InvalidInput, match="unknown format"):
        service.import_memories(ALICE, "notes", b"{}")
    assert service.users.get(ALICE.identity).log.last_seq() == 0


def test_duplicates_of_live_memories_and_within_the_file_are_reported_not_stored(service):
    existing = service.store(ALICE, StoreMemory(text="Loves sci-fi movies"))
    lines = "\n".join(json.dumps({"text": t}) for t in
                      ["Plays the piano on weekends.", "plays the piano on weekends", "Loves sci-fi movies."])
    report = service.import_memories(ALICE, "jsonl", lines.encode())

    assert len(report.imported) == 1
    assert {(d.where, d.duplicate_of) for d in report.duplicates} == {("line 2", report.imported[0]),
                                                                      ("line 3", existing.id)}


def test_garbage_in_any_format_is_refused_with_a_reason_and_stores_nothing(service):
    garbage = [b"\xff\xfe not utf-8", b"[1, 2", b'{"results": 3}', b"null", b'["text"]', b'{"type": "entity"}',
               "\ud800".encode("utf-8", "surrogatepass"), b'{"manifest": "x"}']
    for name in ("server-memory", "mem0", "jsonl", "export"):
        for data in garbage:
            with pytest.raises(InvalidInput):
                service.import_memories(ALICE, name, data)
    assert service.users.get(ALICE.identity).log.last_seq() == 0
