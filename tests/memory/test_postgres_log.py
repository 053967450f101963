"""PostgreSQL's own guarantees, beyond the shared contract (tests/memory/test_log_contract.py):
the database itself refuses what would rewrite history, two processes appending to one person
never fork the chain, and the stored bytes are exactly the ones signed. A real server, started
by the suite (tests/postgres_server.py)."""

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from memory.errors import StorageError
from memory.events import MemoryForgotten, MemoryStored
from memory.identity import LOCAL_ISSUER, Actor, Identity
from memory.ids import new_uuid7
from memory.log import GENESIS_HASH, EventDraft, check_chain
from memory.model import MemoryType, Scope
from memory.postgres_log import PostgresEventLog, PostgresLogDirectory
from memory.signing import KeyRing

ALICE = Identity(LOCAL_ISSUER, "alice")
BOB = Identity(LOCAL_ISSUER, "bob")


def stored(text: str) -> EventDraft:
    memory_id = new_uuid7()
    return EventDraft(event_id=memory_id, actor=Actor("alice", "test"), payload=MemoryStored(
        memory_id=memory_id, text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL))


@pytest.fixture
def directory(postgres_url: str, data_dir: Path) -> Iterator[PostgresLogDirectory]:
    logs = PostgresLogDirectory(postgres_url, KeyRing(data_dir))
    yield logs
    logs.close()


@pytest.fixture
def alice_log(directory) -> PostgresEventLog:
    log = directory.open(ALICE)
    for text in ("first memory", "second memory", "third memory"):
        log.append_events([stored(text)])
    return log


def raw(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


CHANGED_VALUES = {
    "log_id": BOB.key,
    "seq": 99,
    "event_id": "00000000-0000-7000-8000-000000000000",
    "type": "memory.updated",
    "schema_version": 2,
    "recorded_at": "2000-01-01T00:00:00.000000Z",
    "actor_sub": "mallory",
    "actor_client_id": "evil-client",
    "request_id": "forged",
    "payload": b'{"type":"memory.stored"}',
    "payload_sha256": "0" * 64,
    "prev_hash": "f" * 64,
    "entry_hash": "e" * 64,
    "key_id": "forged-key",
    "header": b"{}",
    "signature": b"\x00" * 64,
    "redacted": True,  # without dropping the payload, this is not a redaction
}


@pytest.mark.parametrize("column", list(CHANGED_VALUES))
def test_postgres_rejects_an_update_of_any_column_except_by_redaction(postgres_url, alice_log, column):
    before = alice_log.get_event(2)
    with raw(postgres_url) as db:
        with pytest.raises(psycopg.errors.Error, match="only have its payload redacted|foreign key"):
            db.execute(f"UPDATE events SET {column} = %s WHERE seq = 2", (CHANGED_VALUES[column],))
    assert alice_log.get_event(2) == before


def test_postgres_allows_only_the_redaction_and_never_its_undoing(postgres_url, alice_log):
    with raw(postgres_url) as db:
        with pytest.raises(psycopg.errors.RaiseException):
            db.execute("UPDATE events SET payload = NULL, redacted = true, actor_sub = 'x' WHERE seq = 2")
        db.execute("UPDATE events SET payload = NULL, redacted = true WHERE seq = 2")  # the one allowed change
        with pytest.raises(psycopg.errors.RaiseException):
            db.execute("UPDATE events SET payload = %s, redacted = false WHERE seq = 2", (b"{}",))
    assert alice_log.get_event(2).redacted is True
    alice_log.check_chain()  # a redaction keeps the chain whole


@pytest.mark.parametrize("statement", ["DELETE FROM events WHERE seq = 3", "DELETE FROM events",
                                       "TRUNCATE events CASCADE", "DELETE FROM logs", "TRUNCATE logs CASCADE",
                                       "UPDATE logs SET owner_sub = 'mallory'"])
def test_postgres_rejects_deleting_events_or_logs_and_changing_an_owner(postgres_url, alice_log, statement):
    with raw(postgres_url) as db:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only|keeps its owner"):
            db.execute(statement)
    assert [e.seq for e in alice_log.read_events()] == [1, 2, 3]
    assert alice_log.owner == ALICE


def test_postgres_rejects_an_insert_that_leaves_a_gap_or_forks_the_chain(postgres_url, alice_log):
    with raw(postgres_url) as db:
        row = db.execute("SELECT * FROM events WHERE seq = 3").fetchone()
        for seq, error in ((5, "without a gap"), (3, "without a gap|duplicate key")):
            with pytest.raises(psycopg.errors.Error, match=error):
                db.execute(f"INSERT INTO events VALUES ({', '.join(['%s'] * len(row))})",
                           (row[0], seq, new_uuid7(), *row[3:]))
    assert alice_log.last_seq() == 3


def test_postgres_stores_exactly_the_header_bytes_it_signed(postgres_url, alice_log, data_dir):
    public = KeyRing(data_dir).public_keys()
    with raw(postgres_url) as db:
        rows = db.execute("SELECT seq, header, signature, entry_hash, key_id, payload, payload_sha256, prev_hash "
                          "FROM events WHERE log_id = %s ORDER BY seq", (ALICE.key,)).fetchall()
    assert len(rows) == 3
    prev = GENESIS_HASH
    for seq, header, signature, entry_hash, key_id, payload, payload_sha, prev_hash in rows:
        assert isinstance(header, bytes)
        public[key_id].verify(signature, header)
        assert entry_hash == hashlib.sha256(header).hexdigest()
        fields = json.loads(header)
        assert header == json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        assert (fields["seq"], fields["log"], fields["prev_hash"]) == (seq, ALICE.key, prev_hash)
        assert payload_sha == hashlib.sha256(payload).hexdigest() and prev_hash == prev
        prev = entry_hash


def test_postgres_logs_of_two_people_are_apart(directory, alice_log):
    bob = directory.open(BOB)
    [event] = bob.append_events([stored("bob's")])
    assert event.seq == 1 and event.prev_hash == GENESIS_HASH
    assert alice_log.last_seq() == 3 and bob.last_seq() == 1
    assert [owner for _, owner in directory.list_logs()] == sorted([ALICE, BOB], key=lambda o: o.key)
    assert directory.exists(BOB) and not directory.exists(Identity(LOCAL_ISSUER, "carol"))


def test_a_redacted_payload_leaves_the_tables_pages(postgres_url, directory):
    log = directory.open(ALICE)
    marker = b"zebra-passport-number-4711"
    for text in ("before", f"my {marker.decode()} is secret", "after"):
        log.append_events([stored(text)])
    with raw(postgres_url) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")

        def pages_holding_marker() -> int:
            pages = db.execute("SELECT pg_relation_size('events') / 8192").fetchone()[0]
            return sum(db.execute("SELECT position(%s in get_raw_page('events', %s))", (marker, page)).fetchone()[0] > 0
                       for page in range(pages))

        assert pages_holding_marker() == 1  # the check can see the text where it is
        log.append_events([EventDraft(event_id=new_uuid7(), actor=Actor("alice"),
                                      payload=MemoryForgotten(memory_id="m", redacted_seqs=[2]))], redact_seqs=[2])
        # The UPDATE left the old row version behind; the VACUUM after a redaction removes it.
        assert pages_holding_marker() == 0
    assert log.get_event(2).payload is None


_WRITER = """
import sys
from memory.events import MemoriesRead
from memory.identity import LOCAL_ISSUER, Actor, Identity
from memory.ids import new_uuid7
from memory.log import EventDraft
from memory.postgres_log import PostgresLogDirectory
from memory.signing import KeyRing

url, keys_dir, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
logs = PostgresLogDirectory(url, KeyRing(keys_dir))
log = logs.open(Identity(LOCAL_ISSUER, "alice"))
for i in range(count):
    log.append_events([EventDraft(event_id=new_uuid7(), actor=Actor("alice", name),
                                  payload=MemoriesRead(operation="fetch", query=f"{name}-{i}"))])
logs.close()
"""


def test_two_processes_appending_to_one_person_never_fork_the_chain(directory, postgres_url, data_dir):
    count = 150
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, postgres_url, str(data_dir), name, str(count)],
                                stderr=subprocess.PIPE, text=True) for name in ("replica-a", "replica-b")]
    for writer in writers:
        _, errors = writer.communicate(timeout=240)
        assert writer.returncode == 0, errors

    log = directory.open(ALICE)
    events = list(log.read_events())
    assert [e.seq for e in events] == list(range(1, 2 * count + 1))  # gapless, nothing lost
    for before, after in zip(events, events[1:]):
        assert after.prev_hash == before.entry_hash  # one chain, no fork
    by_writer = {name: [e.payload.query for e in events if e.actor.client_id == name] for name in ("replica-a", "replica-b")}
    for name, queries in by_writer.items():
        assert queries == [f"{name}-{i}" for i in range(count)]  # each writer's appends in its order
    check_chain(log, directory.keys)
    assert log.head_anchor().head.seq == 2 * count


def test_connections_cut_by_the_server_are_storage_errors_and_the_pool_recovers(postgres_url, alice_log):
    with raw(postgres_url) as db:
        cut = db.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert cut >= 1
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append(alice_log.last_seq())
        except StorageError as exc:  # a domain error (507 to a caller), never a driver error
            assert "retry" in str(exc)
            outcomes.append("storage error")
    assert outcomes[-1] == 3, outcomes
    [event] = alice_log.append_events([stored("after the cut")])
    assert event.seq == 4
