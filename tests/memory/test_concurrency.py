"""Concurrent writers: threads sharing one log object, processes with their own, users side by side.

Afterwards the log must hold seqs 1..N with no gap or duplicate, one chain that verifies (no
forks), every acknowledged event at the seq it was acknowledged with, and each batch contiguous.
"""

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from threads import run_threads

from memory import signing
from memory.audit import isolation_check, verify_user
from memory.commands import RetrieveQuery, StoreMemory
from memory.errors import NotFound
from memory.events import MemoryStored
from memory.identity import LOCAL_ISSUER, Actor, Identity
from memory.ids import new_uuid7
from memory.log import EventDraft, SqliteEventLog, log_path
from memory.model import MemoryType, Scope
from memory.service import Caller, MemoryService
from memory.signing import KeyRing
from memory.verify_export import EventRecord, load_jwks, verify_events

ALICE = Identity(LOCAL_ISSUER, "alice")
BOB = Identity(LOCAL_ISSUER, "bob")


def draft(text: str) -> EventDraft:
    memory_id = new_uuid7()
    return EventDraft(event_id=memory_id, actor=Actor("alice", "test"), payload=MemoryStored(
        memory_id=memory_id, text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL))


def assert_one_gapless_chain(data_dir: Path, acked_batches: list[list[tuple[int, str]]]) -> None:
    keys = KeyRing(data_dir)
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, keys)
    try:
        events = list(log.read_events())
        report = verify_events(
            (EventRecord(e.seq, e.event_id, e.type, e.header, e.entry_hash, e.signature, e.payload_bytes,
                         e.redacted) for e in events),
            load_jwks(keys.jwks()), log=ALICE.key, owner={"iss": ALICE.iss, "sub": ALICE.sub})
    finally:
        log.close()
    acked = [ack for batch in acked_batches for ack in batch]
    assert [e.seq for e in events] == list(range(1, len(acked) + 1))
    assert report.ok, report.problems
    assert len({e.entry_hash for e in events}) == len(events)
    by_seq = {e.seq: e.event_id for e in events}
    assert sorted(seq for seq, _ in acked) == list(range(1, len(acked) + 1))  # no seq handed out twice
    for seq, event_id in acked:
        assert by_seq[seq] == event_id
    for batch in acked_batches:
        first = batch[0][0]
        assert [seq for seq, _ in batch] == list(range(first, first + len(batch))), "a batch was split"


def test_eight_threads_appending_through_one_log_get_gapless_seqs_and_one_chain(data_dir: Path):
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, KeyRing(data_dir))
    batches: list[list[tuple[int, str]]] = []

    def writer(n: int) -> None:
        for i in range(25):
            events = log.append_events([draft(f"thread {n} note {i}.{j}") for j in range(1 + i % 3)])
            batches.append([(e.seq, e.event_id) for e in events])

    try:
        run_threads(8, writer)
    finally:
        log.close()

    assert sum(len(b) for b in batches) == 8 * sum(1 + i % 3 for i in range(25))
    assert_one_gapless_chain(data_dir, batches)


CHILD = """
import pathlib, sys, time
from memory.events import MemoryStored
from memory.identity import LOCAL_ISSUER, Actor, Identity
from memory.ids import new_uuid7
from memory.log import EventDraft, SqliteEventLog, log_path
from memory.signing import KeyRing

data_dir, name = pathlib.Path(sys.argv[1]), sys.argv[2]
owner = Identity(LOCAL_ISSUER, "alice")
log = SqliteEventLog(log_path(data_dir, owner), owner, KeyRing(data_dir))
print("ready", flush=True)
while not (data_dir / "go").exists():
    time.sleep(0.001)
for i in range(30):
    drafts = []
    for j in range(1 + i % 2):
        mid = new_uuid7()
        drafts.append(EventDraft(event_id=mid, actor=Actor("alice", name), payload=MemoryStored(
            memory_id=mid, text=f"{name} {i}.{j}", memory_type="episodic", scope="global")))
    print(" ".join(f"{e.seq}:{e.event_id}" for e in log.append_events(drafts)), flush=True)
log.close()
"""


def test_three_processes_appending_to_one_file_get_gapless_seqs_and_one_chain(data_dir: Path):
    # the parent creates the keys and claims the log first; the children only open them
    parent_log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, KeyRing(data_dir))
    children = [subprocess.Popen([sys.executable, "-c", CHILD, data_dir, f"proc-{n}"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for n in range(3)]
    batches: list[list[tuple[int, str]]] = []
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        (data_dir / "go").touch()
        for i in range(20):  # the parent writes at the same time, through its own connection
            batches.append([(e.seq, e.event_id) for e in parent_log.append_events([draft(f"parent {i}")])])
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            for line in out.splitlines():
                batches.append([(int(s), e) for s, e in (ack.split(":", 1) for ack in line.split())])
    finally:
        parent_log.close()
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    assert sum(len(b) for b in batches) == 20 + 3 * sum(1 + i % 2 for i in range(30))
    assert_one_gapless_chain(data_dir, batches)


def test_two_users_written_in_parallel_get_only_their_own_events(data_dir: Path, embedder):
    service = MemoryService(data_dir, embedder)
    users = {"alice": Caller(ALICE, client_id="desktop"), "bob": Caller(BOB, client_id="desktop")}
    ids: dict[str, list[str]] = {"alice": [], "bob": []}

    def writer(i: int) -> None:
        name = ["alice", "bob"][i % 2]
        for n in range(10):
            memory = service.store(users[name], StoreMemory(text=f"{name}'s private note number {n} by writer {i}"))
            ids[name].append(memory.id)
            assert service.get(users[name], memory.id).text == memory.text  # reads its own write
        service.retrieve_context(users[name], RetrieveQuery(query="private note"))

    try:
        run_threads(4, writer)  # two threads per user, all four at once

        for name, other in (("alice", "bob"), ("bob", "alice")):
            caller = users[name]
            store = service.users.get(caller.identity)
            owners = {(e.event_id, e.actor.sub) for e in store.log.read_events()}
            assert {sub for _, sub in owners} == {name}
            stored = {e.event_id for e in store.log.read_events() if e.type == "memory.stored"}
            assert stored == set(ids[name]) and len(stored) == 20
            mine = {r[0] for r in store.view.db.execute("SELECT id FROM memories")}
            assert mine == set(ids[name])
            found = service.retrieve_context(caller, RetrieveQuery(query="private note", limit=100))
            assert {r.memory.id for r in found.memories} == set(ids[name])
            with pytest.raises(NotFound):
                service.get(caller, ids[other][0])
    finally:
        service.close()

    keys = KeyRing(data_dir)
    assert isolation_check(data_dir, keys) == []
    for owner in (ALICE, BOB):
        report = verify_user(data_dir, owner, keys, embedder)
        assert report.ok, report.problems


def test_keyrings_created_at_the_same_moment_agree_on_the_signing_key(data_dir: Path, monkeypatch):
    # Forces the race: each KeyRing waits, inside key creation, until the other one has also
    # found no keyring.json (real processes hit the same window by timing). With the keyring's
    # file lock the second never gets that far, so the wait times out and the first goes on.
    both_checked = threading.Barrier(2, timeout=1)
    write_private = signing._write_private

    def write_after_both_checked(path, data):
        try:
            both_checked.wait()
        except threading.BrokenBarrierError:
            pass
        write_private(path, data)

    monkeypatch.setattr(signing, "_write_private", write_after_both_checked)
    rings: list[KeyRing] = []
    run_threads(2, lambda _: rings.append(KeyRing(data_dir)))
    monkeypatch.undo()

    saved = KeyRing(data_dir)
    for ring in rings:
        assert ring.active_key_id in saved.public_keys(), "events signed by this process would not verify"


class _SlowFor:
    """The real model, slowed down for one text: a stand-in for a long model call."""

    def __init__(self, embedder, slow_text: str, started: threading.Event, release: threading.Event):
        self._embedder, self._slow_text, self._started, self._release = embedder, slow_text, started, release
        self.model_id, self.dimensions = embedder.model_id, embedder.dimensions

    def embed_documents(self, texts):
        if self._slow_text in texts:
            self._started.set()
            self._release.wait(30)
        return self._embedder.embed_documents(texts)

    def embed_query(self, text):
        return self._embedder.embed_query(text)


def test_a_stores_model_call_holds_no_lock_and_the_memory_is_found_as_soon_as_it_is_answered(data_dir: Path, embedder):
    # A store embeds its text before answering (the duplicate check needs the vector), outside
    # the person's lock: everyone's calls, the same person's included, go on during the model call.
    started, release = threading.Event(), threading.Event()
    service = MemoryService(data_dir, _SlowFor(embedder, "the slow one", started, release))
    alice = Caller(Identity(LOCAL_ISSUER, "alice"), "test")
    bob = Caller(Identity(LOCAL_ISSUER, "bob"), "test")
    service.store(alice, StoreMemory(text="Alice keeps bees on the roof"))
    service.store(bob, StoreMemory(text="Bob keeps bees too"))
    stored: list = []
    writer = threading.Thread(target=lambda: stored.append(service.store(alice, StoreMemory(text="the slow one"))))
    try:
        writer.start()
        assert started.wait(30)
        assert [m.memory.text for m in service.retrieve_context(bob, RetrieveQuery(query="bees")).memories] \
            == ["Bob keeps bees too"]
        quick = service.store(alice, StoreMemory(text="Alice sold honey at the market"))
        assert "Alice keeps bees on the roof" in [
            m.memory.text for m in service.retrieve_context(alice, RetrieveQuery(query="bees")).memories]
        assert writer.is_alive() and not stored
    finally:
        release.set()
    writer.join(30)
    found = service.retrieve_context(alice, RetrieveQuery(query="the slow one", limit=3))
    assert [m.memory.id for m in found.memories][0] == stored[0].id
    assert quick.text == "Alice sold honey at the market"
    service.close()
    for caller in (alice, bob):
        report = verify_user(data_dir, caller.identity, KeyRing(data_dir), embedder)
        assert report.ok, report.problems


def test_a_store_made_while_the_background_pool_shuts_down_is_embedded_before_it_returns(data_dir: Path, embedder):
    service = MemoryService(data_dir, embedder)
    alice = Caller(Identity(LOCAL_ISSUER, "alice"), "test")
    service._embed_later.shutdown(wait=True)  # as MemoryService.close does, first
    stored = service.store(alice, StoreMemory(text="Alice's last note before the restart"))
    store = service.users.get(alice.identity)
    assert not store.embeddings_behind and stored.id in store.view.embeddings.index
    service.close()
