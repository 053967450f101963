"""Salted payloads: what a redacted event's header keeps cannot confirm a guessed text, and logs
written before the salt (schema version 1) still verify, export and serve.

The header of a redacted event keeps the SHA-256 of its payload, so that the chain still
verifies. Without a salt, that hash is a function of the text alone (the other fields are known
or few): "yes", "no" or a four-digit PIN is found by hashing every guess.
"""

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from memory import log as event_log
from memory.audit import export_user, verify_user
from memory.commands import RetrieveQuery, StoreMemory
from memory.identity import Identity
from memory.log import log_path
from memory.model import Memory
from memory.service import Caller, MemoryService
from memory.verify_export import main as verify_export_main
from memory.verify_export import verify_bundle

ALICE = Caller(Identity("local", "alice"), "cli", "req-1")


def stored_header(data_dir: Path, seq: int) -> tuple[dict, bytes | None]:
    with closing(sqlite3.connect(f"file:{log_path(data_dir, ALICE.identity)}?mode=ro", uri=True)) as db:
        header, payload = db.execute("SELECT header, payload FROM events WHERE seq = ?", (seq,)).fetchone()
    return json.loads(header), payload


def unsalted_guess(memory: Memory, text: str) -> str:
    """The SHA-256 a memory.stored payload with `text` had before salting: every other field is
    what the memory showed before it was forgotten."""
    payload = {"type": "memory.stored", "memory_id": memory.id, "text": text,
               "memory_type": memory.memory_type.value, "scope": memory.scope.value, "entity": memory.entity,
               "project": memory.project, "task_id": memory.task_id, "tags": memory.tags,
               "status": memory.status, "priority": memory.priority, "occurred_at": memory.occurred_at}
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


@pytest.fixture
def service(data_dir, embedder):
    svc = MemoryService(data_dir, embedder)
    yield svc
    svc.close()


def test_the_header_of_a_forgotten_pin_confirms_no_guess(service, data_dir):
    memory = service.store(ALICE, StoreMemory(text="4417"))
    seq = service.users.get(ALICE.identity).log.last_seq()
    service.forget(ALICE, memory.id)
    header, payload = stored_header(data_dir, seq)
    assert payload is None and header["type"] == "memory.stored"

    guesses = {unsalted_guess(memory, f"{pin:04d}") for pin in range(10_000)}
    assert unsalted_guess(memory, "4417") in guesses  # the right guess is among them...
    assert header["payload_sha256"] not in guesses    # ...and the header confirms none of them


@pytest.fixture
def version_1_log(data_dir, embedder, monkeypatch) -> dict:
    """A data dir written the way the code before salting wrote it: schema version 1 in every
    header, payloads without a salt. Stores, a read, an erasure."""
    def unsalted(payload) -> bytes:
        raw = msgspec.to_builtins(payload)
        raw.pop("salt")
        raw.pop("imported_from", None)  # memory.stored v3's field: v1 had none
        return msgspec.json.encode(raw)

    with monkeypatch.context() as patch:
        patch.setattr(event_log, "SCHEMA_VERSIONS", dict.fromkeys(event_log.SCHEMA_VERSIONS, 1))
        patch.setattr(event_log, "encode_payload", unsalted)
        svc = MemoryService(data_dir, embedder)
        kept = svc.store(ALICE, StoreMemory(text="Alice's bike is in the shed", tags=["home"]))
        secret = svc.store(ALICE, StoreMemory(text="yes"))
        svc.retrieve_context(ALICE, RetrieveQuery(query="where is the bike"))
        seq = svc.users.get(ALICE.identity).log.last_seq() - 1
        svc.forget(ALICE, secret.id)
        svc.close()
    return {"kept": kept, "secret": secret, "secret_seq": seq}


def test_a_log_written_before_salting_still_verifies_exports_and_serves(version_1_log, data_dir, embedder,
                                                                      tmp_path):
    with closing(sqlite3.connect(log_path(data_dir, ALICE.identity))) as db:
        rows = db.execute("SELECT schema_version, payload FROM events ORDER BY seq").fetchall()
    assert {version for version, _ in rows} == {1}
    assert not any(b'"salt"' in payload for _, payload in rows if payload is not None)
    # what salting fixes: the old header still confirms the guess of the forgotten "yes"
    header, _ = stored_header(data_dir, version_1_log["secret_seq"])
    assert header["payload_sha256"] == unsalted_guess(version_1_log["secret"], "yes")

    svc = MemoryService(data_dir, embedder)
    try:
        keys = svc.keys
        report = verify_user(data_dir, ALICE.identity, keys, embedder)
        assert report.ok, report.problems
        assert report.redacted_seqs == [version_1_log["secret_seq"]]
        # version 1 events are upcast on read: the service serves them and appends version 2 after them
        found = svc.retrieve_context(ALICE, RetrieveQuery(query="where is the bike"))
        assert found.memories[0].memory.id == version_1_log["kept"].id
        svc.store(ALICE, StoreMemory(text="A salted memory after the old ones"))
        history = svc.history(ALICE, version_1_log["kept"].id)
        assert history.entries[0].payload["text"] == "Alice's bike is in the shed"
        assert "salt" not in history.entries[0].payload
    finally:
        svc.close()

    report = verify_user(data_dir, ALICE.identity, keys, embedder)
    assert report.ok, report.problems
    bundle = tmp_path / "alice.json"
    export_user(data_dir, ALICE.identity, keys, bundle)
    offline = verify_bundle(bundle)
    assert offline.ok, offline.problems
    assert verify_export_main([str(bundle)]) == 0
    versions = [stored_header(data_dir, seq)[0]["schema_version"] for seq in range(1, offline.last_seq + 1)]
    assert versions[0] == 1 and versions[-1] == 2
