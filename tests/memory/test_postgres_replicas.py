"""Two services over one PostgreSQL database, in one process: two replicas as the service layer
sees them (each its own data directory, connection pools and listener; only the database
shared). A person's lock holds across them (an advisory lock), and each is told of the other's
appends by NOTIFY. The same over real server processes: tests/server/test_replicas.py."""

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import listening_sessions, terminate

from memory.commands import RetrieveQuery, StoreMemory
from memory.identity import LOCAL_ISSUER, Identity
from memory.results import StoreResult
from memory.logs import open_log_directory
from memory.service import Caller, MemoryService
from memory.signing import KeyRing

ALICE = Caller(Identity(LOCAL_ISSUER, "alice"), client_id="test")


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str, embedder) -> Iterator[tuple[MemoryService, MemoryService]]:
    dirs = [tmp_path / "a", tmp_path / "b"]
    KeyRing(dirs[0])
    shutil.copytree(dirs[0] / "keys", dirs[1] / "keys")  # one key ring, as replicas mount one secret
    services = []
    for folder in dirs:
        keys = KeyRing(folder)
        service = MemoryService(folder, embedder, logs=open_log_directory(folder, keys, postgres_url))
        # As `memory serve --database-url` runs it, but with the poll every 60 s: within a test,
        # only a notice (or a call's own look at the head) carries another replica's appends.
        service.follow_others(poll_seconds=60)
        services.append(service)
    try:
        yield services[0], services[1]
    finally:
        for service in services:
            service.close()


def _files_holding(folder: Path, text: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and text in p.read_bytes()]


def test_two_replicas_storing_one_text_at_once_end_with_one_memory_and_a_duplicate(replicas):
    first, second = replicas
    for service in replicas:  # both have alice open, as replicas that served her before
        service.context_info(ALICE)
    for round_ in range(12):
        text = f"The spare key of shed {round_} is under the {round_}th flowerpot by the gate"
        gate = threading.Barrier(2)
        answers: dict[int, object] = {}

        def store(n: int, service: MemoryService) -> None:
            gate.wait()
            try:
                answers[n] = service.store_memory(ALICE, StoreMemory(text=text))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                answers[n] = exc

        threads = [threading.Thread(target=store, args=(n, s)) for n, s in enumerate(replicas)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(isinstance(a, StoreResult) for a in answers.values()), answers
        kept = [a for a in answers.values() if a.duplicate_of is None]
        repeated = [a for a in answers.values() if a.duplicate_of is not None]
        # Without the lock across replicas both pass the duplicate check: two memories, no duplicate.
        assert len(kept) == 1 and len(repeated) == 1, (round_, [(a.memory.id, a.duplicate_of) for a in answers.values()])
        assert repeated[0].duplicate_of == kept[0].memory.id
        # One memory of that text in the log, whichever replica is asked.
        for service in replicas:
            found = service.retrieve_context(ALICE, RetrieveQuery(query=f"spare key of shed {round_}", limit=20))
            assert [m.memory.id for m in found.memories if m.memory.text == text] == [kept[0].memory.id]
    assert first.context_info(ALICE).total_memories == second.context_info(ALICE).total_memories == 12


def test_an_erasure_on_one_replica_leaves_the_others_files_by_notify_alone(replicas, postgres_url):
    first, second = replicas
    assert _wait(lambda: second.following.listening, 10), "the listener never started listening"
    secret = "The safe in the attic opens with 4-8-15-16"
    stored = first.store_memory(ALICE, StoreMemory(text=secret))
    assert second.retrieve_context(ALICE, RetrieveQuery(query="attic safe code")).memories[0].memory.id \
        == stored.memory.id
    assert _files_holding(second.data_dir, secret.encode()), "the second replica never held the text"

    first.forget(ALICE, stored.memory.id)
    assert _wait(lambda: not _files_holding(second.data_dir, secret.encode()), 2.0), \
        _files_holding(second.data_dir, secret.encode())

    # Its listening connection killed: it reconnects, and a later erasure arrives as fast.
    old = listening_sessions(postgres_url)
    assert len(old) == 2  # one per replica
    terminate(postgres_url, old)
    assert _wait(lambda: len(new := listening_sessions(postgres_url)) == 2 and set(new).isdisjoint(old), 10), \
        "the listeners did not come back"
    assert _wait(lambda: second.following.listening, 10)
    again = "The bike lock code is 7-7-3-1"
    stored = first.store_memory(ALICE, StoreMemory(text=again))
    second.retrieve_context(ALICE, RetrieveQuery(query="bike lock code"))
    assert _files_holding(second.data_dir, again.encode())
    first.forget(ALICE, stored.memory.id)
    assert _wait(lambda: not _files_holding(second.data_dir, again.encode()), 2.0)


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
