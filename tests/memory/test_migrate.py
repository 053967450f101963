"""`memory migrate`: a data dir's SQLite logs, made by the service (an erased memory included),
copied into a real PostgreSQL verbatim, verified there; a second run changes nothing, and a run
after more writes and an erasure in SQLite carries over exactly those."""

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from memory.commands import RetrieveQuery, StoreMemory
from memory.identity import Identity
from memory.logs import SqliteLogDirectory
from memory.postgres_log import PostgresLogDirectory
from memory.service import Caller, MemoryService
from memory.signing import KeyRing

MEMORY = Path(sys.executable).parent / "memory"
ALICE = Caller(Identity("local", "alice"), "cli", "req-1")
BOB = Caller(Identity("local", "bob"), "cli", "req-2")
SECRET = "my locker code at the zebra gym is 4711"


def memory(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MEMORY), *args], capture_output=True, text=True, timeout=300)


def rows_by_log(directory) -> dict[str, list[tuple]]:
    """Every log's rows exactly as stored."""
    found = {}
    for _, owner in directory.list_logs():
        log = directory.open(owner)
        found[owner.key] = [tuple(row) for row in log.read_raw()]
        log.close()
    return found


def database_state(url: str) -> list[tuple]:
    with psycopg.connect(url) as db:
        return (db.execute("SELECT * FROM logs ORDER BY log_id").fetchall()
                + db.execute("SELECT * FROM events ORDER BY log_id, seq").fetchall())


def test_migrate_copies_every_log_verbatim_and_a_second_run_changes_nothing(data_dir, postgres_url, embedder):
    service = MemoryService(data_dir, embedder)
    try:
        kept = service.store(ALICE, StoreMemory(text="I take my coffee black")).id
        secret = service.store(ALICE, StoreMemory(text=SECRET)).id
        service.retrieve_context(ALICE, RetrieveQuery(query="zebra gym locker", limit=5))
        service.forget(ALICE, secret)
        service.store(BOB, StoreMemory(text="Bob prefers tea"))
    finally:
        service.close()

    first = memory("migrate", "--data-dir", str(data_dir), "--database-url", postgres_url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "migrated and verified 2 log(s)" in first.stdout

    keys = KeyRing(data_dir)
    sqlite_rows = rows_by_log(SqliteLogDirectory(data_dir, keys))
    database = PostgresLogDirectory(postgres_url, keys)
    try:
        assert rows_by_log(database) == sqlite_rows  # byte for byte, redactions included
        alice = database.open(ALICE.identity)
        assert any(e.redacted for e in alice.read_events())
        assert kept in {e.event_id for e in alice.read_events()}
        alice.check_chain()
    finally:
        database.close()
    with psycopg.connect(postgres_url) as db:
        assert not db.execute("SELECT 1 FROM events WHERE position(%s in payload) > 0",
                              (b"zebra gym",)).fetchall()

    before = database_state(postgres_url)
    second = memory("migrate", "--data-dir", str(data_dir), "--database-url", postgres_url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 event(s) copied" in second.stdout
    assert database_state(postgres_url) == before

    for command in (["verify"], ["isolation-check"], ["export", "--user", "alice", "-o", str(data_dir.parent / "a.json")]):
        result = memory(*command, "--data-dir", str(data_dir), "--database-url", postgres_url)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    checked = memory("verify-export", str(data_dir.parent / "a.json"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    stats = memory("stats", "--json", "--data-dir", str(data_dir), "--database-url", postgres_url)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["users"] == 2 and json.loads(stats.stdout)["operations"]["memory.forgotten"] == 1
    replayed = memory("replay", "--user", "alice", "--data-dir", str(data_dir.parent / "replica"),
                      "--database-url", postgres_url, "--keys-dir", str(data_dir / "keys"))
    assert replayed.returncode == 0 and "projections rebuilt from" in replayed.stdout, replayed.stderr
    added = subprocess.run([str(MEMORY), "user", "add", "carol", "--data-dir", str(data_dir), "--database-url",
                            postgres_url], input="a long enough password\n", capture_output=True, text=True)
    assert added.returncode == 0, added.stderr


def test_migrate_again_carries_over_later_appends_and_erasures_only(data_dir, postgres_url, embedder):
    service = MemoryService(data_dir, embedder)
    try:
        later_secret = service.store(ALICE, StoreMemory(text=SECRET)).id
        service.store(ALICE, StoreMemory(text="The build uses uv"))
    finally:
        service.close()
    assert memory("migrate", "--data-dir", str(data_dir), "--database-url", postgres_url).returncode == 0

    service = MemoryService(data_dir, embedder)
    try:
        service.forget(ALICE, later_secret)
        service.store(ALICE, StoreMemory(text="Standup moved to 10:00"))
    finally:
        service.close()
    again = memory("migrate", "--data-dir", str(data_dir), "--database-url", postgres_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 redacted now" in again.stdout

    keys = KeyRing(data_dir)
    database = PostgresLogDirectory(postgres_url, keys)
    try:
        assert rows_by_log(database) == rows_by_log(SqliteLogDirectory(data_dir, keys))
    finally:
        database.close()


def test_migrate_refuses_a_database_that_went_its_own_way(data_dir, postgres_url, embedder):
    service = MemoryService(data_dir, embedder)
    try:
        service.store(ALICE, StoreMemory(text="written before the move"))
    finally:
        service.close()
    assert memory("migrate", "--data-dir", str(data_dir), "--database-url", postgres_url).returncode == 0
    database = PostgresLogDirectory(postgres_url, KeyRing(data_dir))
    served = MemoryService(data_dir.parent / "replica", embedder, logs=database)
    try:
        served.store(ALICE, StoreMemory(text="written on PostgreSQL after the move"))
    finally:
        served.close()

    result = memory("migrate", "--data-dir", str(data_dir), "--database-url", postgres_url)
    assert result.returncode == 1
    assert "the database was written to since" in result.stderr
