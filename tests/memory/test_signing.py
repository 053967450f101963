"""The key ring across processes: a rotation by `memory rotate-key` reaches a process that already
holds the ring, and `memory verify` says which key signed what, flagging a compromised key's late work."""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from memory.events import MemoryStored
from memory.identity import LOCAL_ISSUER, Actor, Identity
from memory.ids import new_uuid7
from memory.log import EventDraft, SqliteEventLog, log_path
from memory.model import MemoryType, Scope
from memory.signing import KEYRING_FILE, KeyRing, keys_dir

ALICE = Identity(LOCAL_ISSUER, "alice")
MEMORY = Path(sys.executable).parent / "memory"


def append(log: SqliteEventLog, text: str) -> str:
    """Store one memory; the key id its event was signed with."""
    payload = MemoryStored(memory_id=new_uuid7(), text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL)
    (event,) = log.append_events([EventDraft(event_id=payload.memory_id, payload=payload,
                                             actor=Actor("alice", "cli"), request_id=None)])
    return event.key_id


def memory(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MEMORY), *args], capture_output=True, text=True, timeout=120)


def test_a_process_holding_the_key_ring_signs_with_the_new_key_right_after_another_process_rotates(data_dir):
    running = KeyRing(data_dir)  # the server's ring, loaded at start
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, running)
    old = append(log, "before the rotation")

    rotated = memory("rotate-key", "--data-dir", str(data_dir))
    after = append(log, "right after the rotation")
    log.close()

    assert rotated.returncode == 0, rotated.stderr
    new = json.loads((keys_dir(data_dir) / KEYRING_FILE).read_text())["active"]
    assert old != new and after == new


def test_memory_verify_counts_the_events_each_key_signed_and_marks_a_compromised_one(data_dir):
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, KeyRing(data_dir))
    old = append(log, "one")
    append(log, "two")

    rotated = memory("rotate-key", "--compromised", "--data-dir", str(data_dir))
    new = append(log, "three")
    log.close()
    verified = memory("verify", "--data-dir", str(data_dir), "--user", "alice")

    assert rotated.returncode == 0 and f"{old} marked compromised" in rotated.stdout, rotated.stderr
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"signed by {old} (2, compromised), {new} (1)" in verified.stdout


def test_an_event_a_key_signed_after_it_was_marked_compromised_fails_memory_verify_naming_its_seq(data_dir):
    """Stands for a thief with the leaked key writing into the log after the leak was declared."""
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, KeyRing(data_dir))
    kid = append(log, "genuine")
    index = keys_dir(data_dir) / KEYRING_FILE
    doc = json.loads(index.read_text())
    marked = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc["keys"][0]["compromised_at"] = marked
    index.write_text(json.dumps(doc))
    append(log, "forged with the leaked key")
    log.close()

    verified = memory("verify", "--data-dir", str(data_dir), "--user", "alice")

    assert verified.returncode == 1
    assert f"FAIL alice: seq 2: signed by key {kid} after it was marked compromised ({marked})" in verified.stderr
    assert "seq 1" not in verified.stderr
