"""`memory backup` while a server is live and writing, `memory restore` into a new directory: the
restored chains verify, and a server on the restored directory serves the memories."""

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx2

from memory.server.process import ServerProcess

MEMORY = str(Path(sys.executable).parent / "memory")


def memory(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([MEMORY, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert not check or result.returncode == 0, result.stderr
    return result


class _Writer(threading.Thread):
    """Stores memories for alice and bob over REST until told to stop; remembers what was stored."""

    def __init__(self, server: ServerProcess):
        super().__init__(daemon=True)
        self.server = server
        self.stored: list[tuple[str, str, str]] = []  # (user, id, text)
        self.stop = threading.Event()

    def run(self) -> None:
        tokens = {user: self.server.token(user) for user in ("alice", "bob")}
        with httpx2.Client(base_url=self.server.url, timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                user = ("alice", "bob")[n % 2]
                text = f"{user} backup note number {n}"
                response = http.post("/api/v1/memories", json={"text": text},
                                     headers={"Authorization": f"Bearer {tokens[user]}"})
                assert response.status_code == 201, response.text
                self.stored.append((user, response.json()["id"], text))
                n += 1


def test_a_backup_taken_while_writing_restores_verifies_and_serves(tmp_path):
    source, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    with ServerProcess(source) as server:
        server.wait_ready()
        writer = _Writer(server)
        writer.start()
        while len(writer.stored) < 10:
            writer.stop.wait(0.05)
        before_backup = list(writer.stored)
        memory("backup", "--data-dir", source, "--output", backup)
        stored_during = len(writer.stored) - len(before_backup)
        writer.stop.set()
        writer.join(30)
    assert stored_during > 0, "the writer kept writing while the backup ran"
    assert {p.name for p in backup.iterdir()} == {"backup.json", "users", "keys", "oauth.sqlite"}
    assert not list(backup.glob("users/*/projections.sqlite"))

    restore = memory("restore", backup, "--data-dir", restored)
    assert restore.stdout.count("ok ") == 2 and "restored and verified 2 log(s)" in restore.stdout
    assert "verified 2 log(s)" in memory("verify", "--data-dir", restored).stdout

    with ServerProcess(restored) as again:
        with httpx2.Client(base_url=again.url, timeout=30) as http:
            for user, memory_id, text in before_backup:
                got = http.get(f"/api/v1/memories/{memory_id}", headers={"Authorization": f"Bearer {again.token(user)}"})
                assert got.status_code == 200 and got.json()["text"] == text


def test_restore_refuses_a_non_empty_directory_unless_forced(tmp_path):
    source, backup, target = tmp_path / "data", tmp_path / "backup", tmp_path / "target"
    memory("token", "--data-dir", source, "--user", "alice")  # creates the keys: a minimal data dir
    memory("backup", "--data-dir", source, "--output", backup)
    target.mkdir()
    (target / "something").write_text("precious")
    refused = memory("restore", backup, "--data-dir", target, check=False)
    assert refused.returncode == 1 and "is not empty" in refused.stderr and "--force" in refused.stderr
    assert memory("restore", backup, "--data-dir", target, "--force").returncode == 0
    assert (target / "keys" / "keyring.json").read_bytes() == (source / "keys" / "keyring.json").read_bytes()
    again = memory("backup", "--data-dir", source, "--output", backup, check=False)
    assert again.returncode == 1 and "is not empty" in again.stderr


def test_restore_names_the_user_whose_restored_chain_does_not_verify(tmp_path, embedder):
    from memory.commands import StoreMemory
    from memory.identity import Identity
    from memory.service import Caller, MemoryService

    source, backup, target = tmp_path / "data", tmp_path / "backup", tmp_path / "target"
    service = MemoryService(source, embedder)
    service.store(Caller(Identity("local", "carol"), "t"), StoreMemory(text="Carol's original words"))
    service.close()
    memory("backup", "--data-dir", source, "--output", backup)
    (log,) = backup.glob("users/*/events.sqlite")
    db = sqlite3.connect(log)
    db.execute("DROP TRIGGER events_change_only_by_redaction")
    db.execute("UPDATE events SET payload = replace(payload, 'original', 'forged') WHERE seq = 1")
    db.commit()
    db.close()
    failed = memory("restore", backup, "--data-dir", target, check=False)
    assert failed.returncode == 1 and "FAIL carol" in failed.stderr
