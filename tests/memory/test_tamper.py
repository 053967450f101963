"""The tamper matrix: damage a copy of a real data dir and `memory verify` must name user and seq.

One log of about twenty events is built through MemoryService (stores, updates, a link, a
soft delete, reads, an erasure), then each test copies the whole data dir and tampers with the
copy using raw sqlite3, dropping the append-only triggers where the tampering needs it, exactly
as someone with write access to the files could.
"""

import base64
import hashlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memory.commands import RetrieveQuery, StoreMemory, UpdateMemory
from memory.errors import LogIntegrityError
from memory.identity import LOCAL_ISSUER, Identity
from memory.log import HEAD_FILE, log_path
from memory.model import LinkType, MemoryType, Scope
from memory.service import Caller, MemoryService
from projections.base import PROJECTIONS_FILE

MEMORY_CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "memory"
ALICE = Identity(LOCAL_ISSUER, "alice")
CALLER = Caller(ALICE, client_id="claude-code")


class Original(msgspec.Struct, frozen=True):
    data_dir: Path
    last_seq: int
    target: int  # a memory.stored event in the middle of the log, payload intact
    redacted: int


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, embedder) -> Original:
    data_dir = tmp_path_factory.mktemp("tamper") / "data"
    service = MemoryService(data_dir, embedder)
    texts = [
        "Alice prefers short answers without preamble",
        "The apollo project deploys with GitHub Actions to fly.io",
        "Use uv, not pip, for Python environments in apollo",
        "Standup is at 9:30 Berlin time",
        "The staging database is Postgres 16",
        "Never commit directly to main in apollo",
        "Alice's cat is called Miso",
        "Release notes go in CHANGELOG.md",
        "Apollo's API uses OAuth 2.1 with PKCE",
        "Ask before running database migrations",
    ]
    ids = []
    for i, text in enumerate(texts):
        project = "apollo" if "apollo" in text.lower() else None
        memory = service.store(CALLER, StoreMemory(
            text=text, scope=Scope.PROJECT if project else Scope.GLOBAL, project=project,
            memory_type=MemoryType.PROJECT_CONTEXT if project else MemoryType.EPISODIC,
            entity="people.alice" if "Alice" in text else None, tags=[f"t{i % 3}"]))
        ids.append(memory.id)
    service.update(CALLER, ids[3], UpdateMemory(text="Standup is at 10:00 Berlin time"))
    service.update(CALLER, ids[4], UpdateMemory(priority=5))
    service.link(CALLER, ids[1], ids[2], LinkType.SUPPORTS)
    service.delete(CALLER, ids[7], reason="obsolete")
    service.register_entity(CALLER, "apollo", description="The apollo project")
    service.set_project(CALLER, "apollo")
    service.retrieve_context(CALLER, RetrieveQuery(query="how do we deploy"))
    service.get(CALLER, ids[0])
    forgotten = service.forget(CALLER, ids[6])
    service.store(CALLER, StoreMemory(text="Alice moved to Hamburg in 2026", entity="people.alice"))
    log = service.users.get(ALICE).log
    last = log.last_seq()
    # the store of texts[5]: several events follow it, so the chain has a next link to break
    target = next(e.seq for e in log.read_events() if e.event_id == ids[5])
    service.close()
    assert 18 <= last <= 24 and target + 3 <= last
    return Original(data_dir, last, target, len(forgotten.redacted_seqs))


@pytest.fixture
def copy(original: Original, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(original.data_dir, target)
    return target


def memory_cli(*args) -> tuple[int, str]:
    result = subprocess.run([MEMORY_CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=120)
    return result.returncode, result.stdout


def verify(data_dir: Path) -> tuple[int, str]:
    return memory_cli("verify", "--data-dir", data_dir, "--user", "alice")


def assert_fails_naming(data_dir: Path, line_start: str) -> str:
    code, output = verify(data_dir)
    assert code != 0, output
    assert any(line.startswith(line_start) for line in output.splitlines()), output
    return output


@contextmanager
def tampering(data_dir: Path, *drop_triggers: str) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(log_path(data_dir, ALICE), isolation_level=None)) as db:
        for trigger in drop_triggers:
            db.execute(f"DROP TRIGGER {trigger}")
        yield db


NO_UPDATE = "events_change_only_by_redaction"
NO_DELETE = "events_are_never_deleted"


def flip_byte(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def resign(db: sqlite3.Connection, seq: int, key: Ed25519PrivateKey, key_id: str, change) -> str:
    """Rewrite seq's header with `change`, sign it with `key` as `key_id`, fix its entry_hash."""
    header = json.loads(db.execute("SELECT header FROM events WHERE seq = ?", (seq,)).fetchone()[0])
    change(header)
    header["key_id"] = key_id
    data = json.dumps(header, separators=(",", ":")).encode()
    entry_hash = hashlib.sha256(data).hexdigest()
    db.execute("UPDATE events SET header = ?, signature = ?, entry_hash = ?, key_id = ?, actor_sub = ? "
               "WHERE seq = ?", (data, key.sign(data), entry_hash, key_id, header["actor"]["sub"], seq))
    return entry_hash


def plant_key(data_dir: Path) -> tuple[Ed25519PrivateKey, str]:
    """Add an attacker's key to keys/ as a retired keyring entry, the way rotation records keys."""
    key = Ed25519PrivateKey.generate()
    kid = "0badc0de0badc0de"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (data_dir / "keys" / f"{kid}.pem").write_bytes(pem)
    index = data_dir / "keys" / "keyring.json"
    doc = json.loads(index.read_text())
    doc["keys"].insert(0, {"kid": kid, "created_at": "2020-01-01T00:00:00.000000Z",
                           "retired_at": "2020-06-01T00:00:00.000000Z"})
    index.write_text(json.dumps(doc))
    return key, kid


def as_mallory(header: dict) -> None:
    header["actor"]["sub"] = "mallory"


# ----------------------------------------------------------------------------- the original


def test_the_untampered_original_verifies(original: Original):
    code, output = verify(original.data_dir)
    assert code == 0, output
    assert f"ok alice: {original.last_seq} events" in output
    assert f"{original.redacted} redacted" in output


# --------------------------------------------------------------------------- the event log


def test_a_flipped_byte_in_a_header_fails_verify_naming_its_seq(original: Original, copy: Path):
    t = original.target
    with tampering(copy, NO_UPDATE) as db:
        header = db.execute("SELECT header FROM events WHERE seq = ?", (t,)).fetchone()[0]
        inside_timestamp = header.index(b'"recorded_at":"') + len(b'"recorded_at":"') + 3
        db.execute("UPDATE events SET header = ? WHERE seq = ?", (flip_byte(header, inside_timestamp), t))

    output = assert_fails_naming(copy, f"FAIL alice: seq {t}: entry_hash does not match")
    assert f"FAIL alice: seq {t}: signature does not verify" in output


def test_a_flipped_byte_in_a_payload_fails_verify_naming_its_seq(original: Original, copy: Path):
    t = original.target
    with tampering(copy, NO_UPDATE) as db:
        payload = db.execute("SELECT payload FROM events WHERE seq = ?", (t,)).fetchone()[0]
        in_text = payload.index(b'"text":"') + len(b'"text":"') + 2
        db.execute("UPDATE events SET payload = ? WHERE seq = ?", (flip_byte(payload, in_text), t))

    assert_fails_naming(copy, f"FAIL alice: seq {t}: payload does not match payload_sha256")


def test_a_deleted_row_fails_verify_naming_its_seq(original: Original, copy: Path):
    t = original.target
    with tampering(copy, NO_DELETE) as db:
        db.execute("DELETE FROM events WHERE seq = ?", (t,))

    output = assert_fails_naming(copy, f"FAIL alice: seq {t + 1}: out of sequence")
    assert f"expected seq {t} next, seq {t} missing" in output


def test_two_rows_with_swapped_seqs_fail_verify_naming_both_seqs(original: Original, copy: Path):
    t = original.target
    with tampering(copy, NO_UPDATE) as db:
        db.execute("UPDATE events SET seq = -1 WHERE seq = ?", (t,))
        db.execute("UPDATE events SET seq = ? WHERE seq = ?", (t, t + 1))
        db.execute("UPDATE events SET seq = ? WHERE seq = -1", (t + 1,))

    output = assert_fails_naming(copy, f"FAIL alice: seq {t}: header says seq {t + 1}")
    assert f"FAIL alice: seq {t + 1}: header says seq {t} but the event is listed as seq {t + 1}" in output


def test_a_header_resigned_with_a_foreign_key_fails_verify_naming_its_seq(original: Original, copy: Path):
    t = original.target
    with tampering(copy, NO_UPDATE) as db:
        resign(db, t, Ed25519PrivateKey.generate(), "intruder", as_mallory)

    output = assert_fails_naming(copy, f"FAIL alice: seq {t}: key_id intruder is not in the known public keys")
    assert f"FAIL alice: seq {t + 1}: prev_hash does not match" in output


def test_a_header_signed_by_a_foreign_key_under_the_servers_key_id_fails_verify(original: Original, copy: Path):
    t = original.target
    server_kid = json.loads((copy / "keys" / "keyring.json").read_text())["active"]
    with tampering(copy, NO_UPDATE) as db:
        resign(db, t, Ed25519PrivateKey.generate(), server_kid, as_mallory)

    assert_fails_naming(copy, f"FAIL alice: seq {t}: signature does not verify with key {server_kid}")


def test_a_header_resigned_with_a_key_planted_in_the_keyring_is_caught_by_the_chain(original: Original, copy: Path):
    """A key added to keys/ is trusted like the server's own: its signature verifies. What catches
    the forgery is the hash chain: the next event's prev_hash still commits to the old header."""
    t = original.target
    key, kid = plant_key(copy)
    with tampering(copy, NO_UPDATE) as db:
        resign(db, t, key, kid, as_mallory)

    output = assert_fails_naming(
        copy, f"FAIL alice: seq {t + 1}: prev_hash does not match the entry hash of the preceding event (seq {t})")
    assert f"seq {t}: signature" not in output  # the planted key's signature itself passes


def resign_tail(data_dir: Path, original: Original, key: Ed25519PrivateKey, kid: str) -> str:
    """Make the target's actor mallory and re-sign it and every later event; the new head hash."""
    t = original.target
    with tampering(data_dir, NO_UPDATE) as db:
        prev = None
        for seq in range(t, original.last_seq + 1):
            def change(header, seq=seq, prev=prev):
                if seq == t:
                    as_mallory(header)
                if prev is not None:
                    header["prev_hash"] = prev
            prev = resign(db, seq, key, kid, change)
        assert db.execute("SELECT actor_sub FROM events WHERE seq = ?", (t,)).fetchone()[0] == "mallory"
    return prev


def test_a_tail_resigned_with_a_key_planted_in_the_keyring_is_caught_by_the_head_anchor(
        original: Original, copy: Path):
    """Whoever can write keys/ can plant a key, rewrite an event's header (here: who the actor
    was) and re-sign every later event with it: chain, signatures and projections (which ignore
    actors) all agree. The head anchor still names the old head's hash."""
    key, kid = plant_key(copy)
    resign_tail(copy, original, key, kid)

    assert_fails_naming(copy, f"FAIL alice: seq {original.last_seq} is not the event its signed head anchor names")


def test_a_tail_and_head_anchor_resigned_with_a_key_planted_in_the_keyring_is_not_detected(
        original: Original, copy: Path):
    """GAP (current behaviour, asserted so a fix shows up here): the planted key can sign a new
    head anchor too. Only something outside the data dir catches this: an earlier export's signed
    manifest (head_hash), or a JWKS published before the plant (`verify-export --expect-jwks`).
    Nothing checks keys/ against an external pin or an event's key_id against the keyring's
    created_at/retired_at."""
    key, kid = plant_key(copy)
    head_hash = resign_tail(copy, original, key, kid)
    head_file = log_path(copy, ALICE).parent / HEAD_FILE
    signed = json.dumps({"format": "memory-head", "log": ALICE.key, "owner": {"iss": ALICE.iss, "sub": ALICE.sub},
                         "seq": original.last_seq, "entry_hash": head_hash, "key_id": kid},
                        separators=(",", ":")).encode()
    head_file.write_text(json.dumps({"head": base64.b64encode(signed).decode(),
                                     "signature": base64.b64encode(key.sign(signed)).decode()}))

    code, output = verify(copy)
    assert code == 0, output
    assert f"ok alice: {original.last_seq} events" in output


def test_a_changed_owner_in_a_header_fails_verify_naming_its_seq(original: Original, copy: Path):
    t = original.target
    with tampering(copy, NO_UPDATE) as db:
        header = json.loads(db.execute("SELECT header FROM events WHERE seq = ?", (t,)).fetchone()[0])
        header["owner"]["sub"] = "bob"
        db.execute("UPDATE events SET header = ? WHERE seq = ?",
                   (json.dumps(header, separators=(",", ":")).encode(), t))

    output = assert_fails_naming(copy, f"FAIL alice: seq {t}: owner local/bob does not match expected owner local/alice")
    assert f"FAIL alice: seq {t}: signature does not verify" in output


def test_a_changed_owner_in_the_log_meta_fails_verify_naming_the_user(copy: Path):
    with tampering(copy) as db:
        db.execute("UPDATE log_meta SET value = 'bob' WHERE key = 'owner_sub'")

    code, output = verify(copy)
    assert code != 0
    assert "Traceback" not in output, output
    assert any(line.startswith("FAIL alice:") for line in output.splitlines()), output


def test_a_truncated_tail_is_caught_by_the_head_anchor_and_the_projection_checkpoint(
        original: Original, copy: Path):
    """A log cut short is still a valid chain on its own. What pins its head is its signed head
    anchor (head.json), and projections.sqlite, whose checkpoint claims the last seq."""
    keep = original.last_seq - 3
    with tampering(copy, NO_DELETE) as db:
        db.execute("DELETE FROM events WHERE seq > ?", (keep,))

    assert_fails_naming(copy, f"FAIL alice: the log ends at seq {keep} but its signed head anchor is seq "
                              f"{original.last_seq}: events {keep + 1}..{original.last_seq} were cut from its end")
    (log_path(copy, ALICE).parent / HEAD_FILE).unlink()
    output = assert_fails_naming(copy, "FAIL alice: the log has events but no head anchor: it was deleted")
    assert f"projections claim seq {original.last_seq} but the log ends at {keep}" not in output  # chain first
    code, output = memory_cli("export", "--data-dir", copy, "--user", "alice", "--output", copy / "cut.json")
    assert code != 0 and "no head anchor" in output and not (copy / "cut.json").exists(), output


def test_a_truncated_tail_with_its_projections_removed_fails_verify_and_export_naming_the_seq(
        original: Original, copy: Path):
    """Projections are derived data and may be deleted (they are rebuilt on open); the head anchor
    lives beside the log and is signed, so a log cut short still fails verify without them."""
    keep = original.last_seq - 3
    for path in log_path(copy, ALICE).parent.glob(f"{PROJECTIONS_FILE}*"):
        path.unlink()
    with tampering(copy, NO_DELETE, "events_are_gapless") as db:
        db.execute("DELETE FROM events WHERE seq > ?", (keep,))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not list(log_path(copy, ALICE).parent.glob(f"{PROJECTIONS_FILE}*"))

    assert_fails_naming(copy, f"FAIL alice: the log ends at seq {keep} but its signed head anchor is seq "
                              f"{original.last_seq}")
    code, output = memory_cli("export", "--data-dir", copy, "--user", "alice", "--output", copy / "cut.json")
    assert code != 0 and f"signed head anchor is seq {original.last_seq}" in output, output
    assert not (copy / "cut.json").exists()


def test_the_service_appends_nothing_to_a_log_cut_short(original: Original, copy: Path, embedder):
    """A server restarted on a truncated log must not grow it past the cut (the new events would
    take the cut seqs and hide the truncation): the log is locked, its anchor left as it was."""
    keep = original.last_seq - 3
    with tampering(copy, NO_DELETE) as db:
        db.execute("DELETE FROM events WHERE seq > ?", (keep,))
    head = (log_path(copy, ALICE).parent / HEAD_FILE).read_bytes()
    service = MemoryService(copy, embedder)
    try:
        with pytest.raises(LogIntegrityError, match=f"seq {keep} but its signed head anchor is seq"):
            service.store(CALLER, StoreMemory(text="written after the cut"))
    finally:
        service.close()
    assert (log_path(copy, ALICE).parent / HEAD_FILE).read_bytes() == head
    with tampering(copy) as db:
        assert db.execute("SELECT max(seq) FROM events").fetchone()[0] == keep


# ----------------------------------------------------------------------------- projections


def test_a_changed_memory_text_in_the_projections_fails_verify_naming_the_projection(copy: Path):
    projections = log_path(copy, ALICE).parent / PROJECTIONS_FILE
    with closing(sqlite3.connect(projections, isolation_level=None)) as db:
        changed = db.execute("UPDATE memories SET text = 'Alice prefers long answers' "
                             "WHERE text LIKE 'Alice prefers short%'").rowcount
    assert changed == 1

    assert_fails_naming(copy, "FAIL alice: projection 'memories' disagrees with the log")


# ---------------------------------------------------------------------------------- export


@pytest.fixture
def bundle(copy: Path, tmp_path: Path) -> Path:
    path = tmp_path / "alice-export.json"
    code, output = memory_cli("export", "--data-dir", copy, "--user", "alice", "--output", path)
    assert code == 0, output
    return path


def test_an_export_verifies_offline_on_its_own_and_against_the_servers_jwks(
        original: Original, copy: Path, bundle: Path, tmp_path: Path):
    code, output = memory_cli("verify-export", bundle)
    assert code == 0, output
    assert f"OK: log {ALICE.key}, owner local/alice, {original.last_seq} events" in output

    jwks = tmp_path / "jwks.json"
    code, published = memory_cli("jwks", "--data-dir", copy)
    assert code == 0
    jwks.write_text(published)
    code, output = memory_cli("verify-export", bundle, "--expect-jwks", jwks)
    assert code == 0, output


def test_an_export_with_an_edited_payload_fails_verify_export_naming_its_seq(original: Original, bundle: Path):
    t = original.target
    doc = json.loads(bundle.read_text())
    [row] = [r for r in doc["events"] if r["seq"] == t]
    payload = json.loads(base64.b64decode(row["payload"]))
    payload["text"] = "Alice wants all answers in French"
    row["payload"] = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
    bundle.write_text(json.dumps(doc))

    code, output = memory_cli("verify-export", bundle)
    assert code == 1, output
    assert f"seq {t}: payload does not match payload_sha256" in output


def test_an_export_missing_its_last_event_fails_verify_export(original: Original, bundle: Path):
    doc = json.loads(bundle.read_text())
    doc["events"].pop()
    bundle.write_text(json.dumps(doc))

    code, output = memory_cli("verify-export", bundle)
    assert code == 1, output
    assert f"manifest event_count is {original.last_seq} but the events give {original.last_seq - 1}" in output
