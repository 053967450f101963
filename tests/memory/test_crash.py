"""Crash safety: SIGKILL a writer at random points; every acknowledged event survives intact.

A child process (`_crash_writer.py`) writes through MemoryService, so projections are written
too, and prints each acknowledged seq and event id. The parent kills it with SIGKILL after a
random number of acks plus a random few milliseconds (so most kills land inside a write), twenty
times over the same data dir, and after every kill checks the log, the files, verification and the
projections' catch-up; `memory verify` runs on the result at the end. Both backends: the log in
SQLite, and in a real PostgreSQL (a killed client's open transaction is rolled back by the server).
"""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from memory.audit import verify_user
from memory.identity import LOCAL_ISSUER, Identity
from memory.log import log_path, user_folder
from memory.logs import open_log_directory
from memory.service import MemoryService
from memory.signing import KeyRing
from projections.base import PROJECTIONS_FILE

WRITER = Path(__file__).with_name("_crash_writer.py")
ALICE = Identity(LOCAL_ISSUER, "alice")
ROUNDS = 20

pytestmark = pytest.mark.slow


def run_writer_until_killed(data_dir: Path, seed: int, kill_after: int, delay: float = 0.0,
                            database_url: str | None = None) -> list[tuple[int, str]]:
    """Start a writer, SIGKILL it `delay` seconds after its `kill_after`th ack, return every ack it printed."""
    errors = data_dir.parent / f"writer-{seed}.stderr"  # a file: an undrained pipe could block the child
    with errors.open("w") as stderr:
        child = subprocess.Popen([sys.executable, WRITER, data_dir, str(seed), *([database_url] if database_url else [])],
                                 stdout=subprocess.PIPE,
                                 stderr=stderr, text=True)
    lines = []
    try:
        assert child.stdout.readline().strip() == "ready", errors.read_text()
        while len(lines) < kill_after:
            line = child.stdout.readline()
            if not line:
                child.wait(timeout=60)
                raise AssertionError(f"writer exited early: {errors.read_text()}")
            lines.append(line)
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        rest, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    lines += rest.splitlines()  # acks printed before the kill landed are acknowledged too
    acks = []
    for line in lines:
        word, seq, event_id = line.split()
        assert word == "ack"
        acks.append((int(seq), event_id))
    return acks


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str | None:
    return request.getfixturevalue("postgres_url") if request.param == "postgres" else None


def test_a_writer_killed_at_random_points_loses_no_acknowledged_event(data_dir: Path, embedder, database_url):
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    acknowledged: list[tuple[int, str]] = []
    for round_ in range(ROUNDS):
        kill_after, delay = rng.randint(1, 25), rng.uniform(0, 0.02)
        where = f"seed {seed}, round {round_}, killed {delay * 1000:.1f} ms after {kill_after} acks"
        acks = run_writer_until_killed(data_dir, seed + round_, kill_after, delay, database_url)
        assert len(acks) >= kill_after, where
        acknowledged += acks

        if database_url is None:
            assert integrity(log_path(data_dir, ALICE)) == "ok", where
        assert integrity(user_folder(data_dir, ALICE) / PROJECTIONS_FILE) == "ok", where

        keys = KeyRing(data_dir)
        logs = open_log_directory(data_dir, keys, database_url)
        log = logs.open(ALICE)
        try:
            for seq, event_id in acknowledged:
                event = log.get_event(seq)
                assert event is not None and event.event_id == event_id, f"{where}: seq {seq} lost or changed"
            assert [e.seq for e in log.read_events()] == list(range(1, log.last_seq() + 1)), where
            stored_events = sum(1 for e in log.read_events() if e.type == "memory.stored")
            last_seq = log.last_seq()
        finally:
            log.close()
        assert last_seq >= acknowledged[-1][0], where

        report = verify_user(data_dir, ALICE, keys, embedder, logs=logs)
        assert report.ok, f"{where}: {report.problems}"
        assert report.event_count == last_seq
        logs.close()

        service = MemoryService(data_dir, embedder, logs=open_log_directory(data_dir, keys, database_url))
        try:
            store = service.users.get(ALICE)
            assert store.view.checkpoint == last_seq, where
            memories = store.view.db.execute("SELECT count(*) FROM memories").fetchone()[0]
            assert memories == stored_events, where
            assert len(store.view.embeddings.index) == store.view.db.execute(
                "SELECT count(*) FROM memories WHERE deleted = 0").fetchone()[0], where
        finally:
            service.close()

    memory = Path(sys.executable).parent / "memory"
    verified = subprocess.run([str(memory), "verify", "--data-dir", str(data_dir),
                               *(["--database-url", database_url] if database_url else [])], capture_output=True, text=True)
    assert verified.returncode == 0, f"seed {seed}: {verified.stdout}{verified.stderr}"
