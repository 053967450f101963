"""A person's lock across replicas on PostgreSQL (an advisory lock, memory/postgres_lock.py) as
`UserLock` takes it: queued behind another replica's hold, told the head that replica left, and
never left held, by a failure or by a connection going back to its pool."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from memory.errors import StorageError
from memory.events import MemoryStored
from memory.identity import LOCAL_ISSUER, Actor, Identity
from memory.ids import new_uuid7
from memory.log import EventDraft
from memory.model import MemoryType, Scope
from memory.postgres_lock import lock_key
from memory.postgres_log import PostgresLogDirectory
from memory.signing import KeyRing
from memory.userlock import UserLock

ALICE = Identity(LOCAL_ISSUER, "alice")


@pytest.fixture
def two_directories(postgres_url: str, tmp_path: Path) -> Iterator[tuple[PostgresLogDirectory, PostgresLogDirectory]]:
    """Two replicas' log directories on one database (each its own pools)."""
    keys = KeyRing(tmp_path)
    first, second = PostgresLogDirectory(postgres_url, keys), PostgresLogDirectory(postgres_url, keys)
    yield first, second
    first.close()
    second.close()


def _stored(text: str) -> EventDraft:
    memory_id = new_uuid7()
    return EventDraft(event_id=memory_id, actor=Actor("alice", "test"), payload=MemoryStored(
        memory_id=memory_id, text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL))


def _free_in_the_database(url: str, log_id: str) -> bool:
    """Whether a third session can take the log's lock at once (it then lets it go)."""
    with psycopg.connect(url, autocommit=True) as conn:
        taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(log_id),)).fetchone()[0]
        if taken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(log_id),))
        return taken


def test_a_replica_waits_for_anothers_hold_and_is_told_the_head_it_left(two_directories):
    first, second = two_directories
    log = first.open(ALICE)
    log.append_events([_stored("one")])
    holder, waiter = UserLock(first.writer_lock(ALICE)), UserLock(second.writer_lock(ALICE))
    told: list[int | None] = []
    waiter.on_acquire = told.append
    granted = threading.Event()

    def take() -> None:
        with waiter:
            granted.set()

    with holder:
        thread = threading.Thread(target=take)
        thread.start()
        time.sleep(0.5)
        assert not granted.is_set(), "the second replica got the lock while the first held it"
        log.append_events([_stored("two")])  # appended under the hold, seen by the waiter's grant
    thread.join(10)
    assert granted.is_set()
    assert told == [2]


def test_a_failure_after_the_grant_releases_the_thread_lock_and_the_database_lock(two_directories, postgres_url):
    first, _ = two_directories
    first.open(ALICE)
    lock = UserLock(first.writer_lock(ALICE))

    def failing_follow(_: int | None) -> None:
        raise StorageError("the projections could not be caught up")

    lock.on_acquire = failing_follow
    with pytest.raises(StorageError):
        with lock:
            pytest.fail("the body ran although taking the lock failed")
    assert _free_in_the_database(postgres_url, ALICE.key)
    other = threading.Thread(target=lambda: lock.local.acquire() and lock.local.release())
    other.start()
    other.join(5)
    assert not other.is_alive(), "the thread lock stayed held"


def test_no_pooled_connection_keeps_the_lock_after_a_release(two_directories, postgres_url):
    first, _ = two_directories
    first.open(ALICE)
    lock = UserLock(first.writer_lock(ALICE))
    for _ in range(3):
        with lock:
            with lock:  # re-entrant: the inner hold takes nothing more
                assert not _free_in_the_database(postgres_url, ALICE.key)
            assert not _free_in_the_database(postgres_url, ALICE.key)
        assert _free_in_the_database(postgres_url, ALICE.key)


def test_a_lock_whose_connection_was_killed_while_held_is_released_without_error(two_directories, postgres_url):
    first, _ = two_directories
    first.open(ALICE)
    lock = UserLock(first.writer_lock(ALICE))
    with lock:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()
            assert ended == [(True,)]
    # The session ended with its lock; the next hold takes a fresh connection from the pool.
    assert _free_in_the_database(postgres_url, ALICE.key)
    with lock:
        assert not _free_in_the_database(postgres_url, ALICE.key)
    assert _free_in_the_database(postgres_url, ALICE.key)
