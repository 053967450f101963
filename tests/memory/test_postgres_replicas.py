"""Two services over one PostgreSQL database, in one process: two replicas as the service layer
sees them (each its own data directory and connection pools; only the database shared). A
person's lock holds across them (an advisory lock)."""

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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
        services.append(MemoryService(folder, embedder, logs=open_log_directory(folder, keys, postgres_url)))
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
