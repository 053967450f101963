"""The `EventStore` contract, run against every implementation, then each backend's own guarantees.

Add an implementation by appending a factory to `STORE_FACTORIES`: a class whose instances open
stores (`open(owner, slot=...)`) over one fresh place (a data dir, a database) and close them all
in `close()`. Every contract test then runs against it unchanged. The PostgreSQL factory gets a
fresh database on the suite's own server (tests/postgres_server.py).
"""

import hashlib
import json
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from secrets import token_hex

import msgspec
import pytest

from memory.errors import IdempotencyConflict, LogIntegrityError, MemoryServiceError
from memory.events import SCHEMA_VERSIONS, MemoriesRead, MemoryForgotten, MemoryStored, MemoryUpdated, encode_payload
from memory.identity import LOCAL_ISSUER, Actor, Identity
from memory.ids import new_uuid7
from memory.log import GENESIS_HASH, HEAD_FILE, LOG_FILE, EventDraft, EventStore, SqliteEventLog, StoredEvent, head_problem, log_path
from memory.model import MemoryType, Scope
from memory.signing import KeyRing
from memory.verify_export import EventRecord, load_jwks, verify_events

MEMORY_CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "memory"
ALICE = Identity(LOCAL_ISSUER, "alice")
BOB = Identity(LOCAL_ISSUER, "bob")
ACTOR = Actor("alice", "claude-desktop")


# ----------------------------------------------------------------------------- factories


class SqliteStores:
    """Opens `SqliteEventLog`s in a data dir laid out as the service lays it out."""

    def __init__(self, root: Path):
        self.root = root
        self.keys = KeyRing(root)
        self._opened: list[SqliteEventLog] = []

    def open(self, owner: Identity, *, slot: Identity | None = None) -> SqliteEventLog:
        """`owner`'s log; with `slot`, the storage that belongs to `slot` opened as `owner`."""
        store = SqliteEventLog(log_path(self.root, slot or owner), owner, self.keys)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            try:
                store.close()
            except sqlite3.ProgrammingError:
                pass  # a test closed it already


class PostgresStores:
    """Opens `PostgresEventLog`s in one fresh database, through one pool as the service does."""

    needs_database = True

    def __init__(self, root: Path, url: str):
        from memory.postgres_log import PostgresLogDirectory

        self.keys = KeyRing(root)
        self.directory = PostgresLogDirectory(url, self.keys)

    def open(self, owner: Identity, *, slot: Identity | None = None) -> EventStore:
        """`owner`'s log; with `slot`, the log that belongs to `slot` opened as `owner`."""
        return self.directory.open(owner, log_id=(slot or owner).key)

    def close(self) -> None:
        self.directory.close()


STORE_FACTORIES = [pytest.param(SqliteStores, id="sqlite"), pytest.param(PostgresStores, id="postgres")]


@pytest.fixture(params=STORE_FACTORIES)
def stores(request: pytest.FixtureRequest, tmp_path: Path):
    if getattr(request.param, "needs_database", False):
        factory = request.param(tmp_path / "data", request.getfixturevalue("postgres_url"))
    else:
        factory = request.param(tmp_path / "data")
    yield factory
    factory.close()


@pytest.fixture
def store(stores) -> EventStore:
    return stores.open(ALICE)


# ------------------------------------------------------------------------------- helpers


def new_salt() -> str:
    return token_hex(16)


def stored(text: str = "the build uses uv", **fields) -> MemoryStored:
    return MemoryStored(memory_id=new_uuid7(), text=text, memory_type=MemoryType.EPISODIC,
                        scope=Scope.GLOBAL, **fields)


def draft(payload=None, *, event_id: str | None = None, request_id: str | None = None) -> EventDraft:
    payload = payload if payload is not None else stored()
    if event_id is None:
        event_id = payload.memory_id if isinstance(payload, MemoryStored) else new_uuid7()
    return EventDraft(event_id=event_id, payload=payload, actor=ACTOR, request_id=request_id)


def append_texts(store: EventStore, *texts: str) -> list[StoredEvent]:
    return [store.append_events([draft(stored(t))])[0] for t in texts]


def seqs(events) -> list[int]:
    return [e.seq for e in events]


def records(events) -> Iterator[EventRecord]:
    for e in events:
        yield EventRecord(seq=e.seq, event_id=e.event_id, type=e.type, header=e.header,
                          entry_hash=e.entry_hash, signature=e.signature, payload=e.payload_bytes,
                          redacted=e.redacted)


def verify_store(store: EventStore, keys: KeyRing):
    return verify_events(records(store.read_events()), load_jwks(keys.jwks()), log=store.owner.key,
                         owner={"iss": store.owner.iss, "sub": store.owner.sub})


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# ------------------------------------------------------------------------ contract: appends


def test_an_empty_log_has_last_seq_zero_and_reads_nothing(store):
    assert store.last_seq() == 0
    assert list(store.read_events()) == []
    assert store.get_event(1) is None
    assert store.owner == ALICE


def test_appends_are_numbered_gaplessly_from_one_and_chained_in_order(store):
    singles = append_texts(store, "one", "two", "three")
    batch = store.append_events([draft(stored(t)) for t in ("four", "five", "six", "seven")])

    assert seqs(singles) == [1, 2, 3]
    assert seqs(batch) == [4, 5, 6, 7]
    assert store.last_seq() == 7
    events = list(store.read_events())
    assert seqs(events) == [1, 2, 3, 4, 5, 6, 7]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in zip(events, events[1:]):
        assert after.prev_hash == before.entry_hash
    assert [e.payload.text for e in events] == ["one", "two", "three", "four", "five", "six", "seven"]


def test_a_stored_event_carries_exactly_what_its_draft_said(store):
    payload = stored("prefers tabs", tags=["style"], priority=3)
    d = draft(payload, request_id="req-1")
    [event] = store.append_events([d])

    assert event.event_id == d.event_id
    assert event.type == "memory.stored"
    assert event.schema_version == SCHEMA_VERSIONS["memory.stored"] == 3
    assert event.actor == ACTOR
    assert event.request_id == "req-1"
    assert event.payload == payload
    assert event.payload_bytes == encode_payload(payload)
    assert event.payload_sha256 == hashlib.sha256(event.payload_bytes).hexdigest()
    assert event.entry_hash == hashlib.sha256(event.header).hexdigest()
    assert event.redacted is False
    assert store.get_event(event.seq) == event


def test_the_chain_read_back_verifies_with_the_keyrings_public_keys(stores, store):
    append_texts(store, "a", "b")
    store.append_events([draft(stored("c")), draft(MemoriesRead(operation="fetch", returned_ids=["x"]))])

    report = verify_store(store, stores.keys)
    assert report.ok, report.problems
    assert report.event_count == 4
    assert report.head_hash == store.get_event(4).entry_hash


def test_a_batch_with_one_conflicting_draft_appends_none_of_them(store):
    [first] = append_texts(store, "original")
    fresh_before, fresh_after = draft(stored("new one")), draft(stored("new two"))
    conflicting = draft(stored("different text"), event_id=first.event_id)

    with pytest.raises(IdempotencyConflict):
        store.append_events([fresh_before, conflicting, fresh_after])

    assert store.last_seq() == 1
    assert [e.event_id for e in store.read_events()] == [first.event_id]
    # the fresh drafts were not half-applied: they append cleanly afterwards at seq 2 and 3
    assert seqs(store.append_events([fresh_before, fresh_after])) == [2, 3]


def test_a_batch_repeating_an_event_id_appends_nothing(store):
    append_texts(store, "original")
    twice = draft(stored("said twice"))

    with pytest.raises(Exception):
        store.append_events([draft(stored("fine")), twice, twice])

    assert store.last_seq() == 1


def test_a_batch_repeating_an_event_id_raises_a_domain_error(store):
    twice = draft(stored("said twice"))
    with pytest.raises(MemoryServiceError):
        store.append_events([twice, twice])


# -------------------------------------------------------------------------- contract: reads


def test_read_events_returns_the_range_after_one_seq_up_to_and_including_another(store):
    append_texts(store, *[f"m{i}" for i in range(1, 8)])

    assert seqs(store.read_events(2, 5)) == [3, 4, 5]
    assert seqs(store.read_events(5)) == [6, 7]
    assert seqs(store.read_events(0, 1)) == [1]
    assert seqs(store.read_events(to_seq=0)) == []
    assert seqs(store.read_events(7)) == []
    assert seqs(store.read_events(3, 3)) == []
    assert seqs(store.read_events(6, 100)) == [7]


def test_read_events_streams_a_log_longer_than_one_read_chunk(store):
    total = 2345  # more than two of SqliteEventLog's 1000-row chunks
    store.append_events([draft(MemoriesRead(operation="fetch")) for _ in range(total)])

    assert seqs(store.read_events()) == list(range(1, total + 1))
    assert seqs(store.read_events(999, 2001)) == list(range(1000, 2002))
    assert store.last_seq() == total


def test_get_event_returns_the_event_at_a_seq_and_none_outside_the_log(store):
    events = append_texts(store, "a", "b", "c")

    for event in events:
        assert store.get_event(event.seq) == event
    assert store.get_event(0) is None
    assert store.get_event(4) is None
    assert store.get_event(-1) is None


def test_seq_at_time_is_the_last_seq_recorded_at_or_before_a_time(store):
    events = append_texts(store, "a", "b", "c", "d")

    assert store.seq_at_time("2000-01-01T00:00:00.000000Z") == 0
    assert store.seq_at_time("2999-01-01T00:00:00.000000Z") == 4
    for event in events:
        # several events can share a timestamp: the answer is the last of them
        expected = max(e.seq for e in events if e.recorded_at <= event.recorded_at)
        assert store.seq_at_time(event.recorded_at) == expected


def test_seq_at_time_accepts_any_rfc3339_utc_spelling_of_a_time(store):
    events = append_texts(store, "a", "b", "c", "d")
    target = events[2]
    whole_second = target.recorded_at[:19] + "Z"  # drops the fraction: just before the event
    offset_form = target.recorded_at.replace("Z", "+00:00")

    def expected(stamp: str) -> int:
        return max((e.seq for e in events if parse_time(e.recorded_at) <= parse_time(stamp)), default=0)

    assert store.seq_at_time(offset_form) == expected(offset_form)
    assert store.seq_at_time(whole_second) == expected(whole_second)


# --------------------------------------------------------------------- contract: idempotency


def test_a_retried_event_id_with_the_same_payload_returns_the_first_event_and_no_new_seq(store):
    payload = stored("retry me")
    [first] = store.append_events([draft(payload)])
    append_texts(store, "something after")

    [again] = store.append_events([draft(payload, request_id="a-retry")])

    assert again == first
    assert store.last_seq() == 2


def test_a_retry_built_anew_with_another_salt_returns_the_first_event(store):
    payload = stored("retry me")
    [first] = store.append_events([draft(payload)])
    rebuilt = msgspec.structs.replace(payload, salt=new_salt())
    assert rebuilt != payload

    assert store.append_events([draft(rebuilt)]) == [first]
    assert store.last_seq() == 1


def test_a_retry_of_a_redacted_event_returns_it_and_stores_no_text_again(store):
    payload = stored("forget me")
    [first] = store.append_events([draft(payload)])
    store.append_events([draft(MemoryForgotten(memory_id=payload.memory_id, redacted_seqs=[1]))], redact_seqs=[1])

    [again] = store.append_events([draft(msgspec.structs.replace(payload, salt=new_salt()))])

    assert again.seq == 1 and again.redacted and again.payload is None
    assert store.last_seq() == 2


def test_a_retried_batch_returns_the_first_events_in_order(store):
    batch = [draft(stored("x")), draft(stored("y"))]
    first = store.append_events(batch)
    assert store.append_events(batch) == first
    assert store.last_seq() == 2


@pytest.mark.parametrize("other", [
    pytest.param(lambda p: msgspec.structs.replace(p, text="a different text"), id="different-payload"),
    pytest.param(lambda p: MemoryUpdated(memory_id=p.memory_id, text=p.text), id="different-type"),
])
def test_a_reused_event_id_with_other_content_raises_and_appends_nothing(store, other: Callable):
    payload = stored("the original")
    [first] = store.append_events([draft(payload)])

    with pytest.raises(IdempotencyConflict, match=first.event_id):
        store.append_events([draft(other(payload), event_id=first.event_id)])

    assert store.last_seq() == 1
    assert store.get_event(1) == first


# ----------------------------------------------------------------------- contract: redaction


def test_redaction_removes_the_payload_and_keeps_header_hash_and_signature(stores, store):
    before = append_texts(store, "secret one", "secret two", "keep me")
    target = before[0].payload.memory_id

    [tombstone] = store.append_events([draft(MemoryForgotten(memory_id=target, redacted_seqs=[1, 2]))],
                                      redact_seqs=[1, 2])

    assert tombstone.seq == 4
    for old in before[:2]:
        now = store.get_event(old.seq)
        assert now.payload is None and now.payload_bytes is None
        assert now.redacted is True
        assert (now.payload_sha256, now.header, now.signature, now.entry_hash, now.event_id, now.type) == (
            old.payload_sha256, old.header, old.signature, old.entry_hash, old.event_id, old.type)
    assert store.get_event(3) == before[2]
    report = verify_store(store, stores.keys)
    assert report.ok, report.problems
    assert report.redacted_seqs == [1, 2]


def test_redacting_an_already_redacted_seq_changes_nothing(store):
    append_texts(store, "gone")
    store.append_events([draft(MemoryForgotten(memory_id="m", redacted_seqs=[1]))], redact_seqs=[1])
    redacted = store.get_event(1)

    store.append_events([draft(MemoryForgotten(memory_id="m", redacted_seqs=[1]))], redact_seqs=[1])

    assert store.get_event(1) == redacted
    assert store.last_seq() == 3


def test_a_redaction_riding_on_a_failed_append_does_not_happen(store):
    [first, second] = append_texts(store, "still here", "another")

    with pytest.raises(IdempotencyConflict):
        store.append_events([draft(stored("clash"), event_id=second.event_id)], redact_seqs=[1])

    assert store.get_event(1) == first
    assert store.last_seq() == 2


# ------------------------------------------------------------------------- contract: owner


def test_opening_a_log_as_another_owner_raises_and_the_owner_still_opens_it(stores, store):
    append_texts(store, "alice's")
    store.close()

    with pytest.raises(LogIntegrityError, match="belongs to another user"):
        stores.open(BOB, slot=ALICE)

    reopened = stores.open(ALICE)
    assert reopened.last_seq() == 1
    assert reopened.get_event(1).payload.text == "alice's"


def test_a_reopened_log_continues_its_chain(stores, store):
    [first] = append_texts(store, "before close")
    store.close()

    reopened = stores.open(ALICE)
    [second] = append_texts(reopened, "after reopen")

    assert second.seq == 2
    assert second.prev_hash == first.entry_hash
    assert verify_store(reopened, stores.keys).ok


# ----------------------------------------------------------------------- contract: head anchor


def test_an_empty_log_has_no_head_anchor_and_nothing_to_check(stores, store):
    assert store.head_anchor() is None
    assert head_problem(store, stores.keys) is None


def test_every_append_signs_the_new_head_apart_from_the_log(stores, store):
    for text in ("one", "two"):
        [event] = append_texts(store, text)
        anchor = store.head_anchor()
        assert (anchor.head.seq, anchor.head.entry_hash) == (event.seq, event.entry_hash)
        assert (anchor.head.log, anchor.head.owner) == (ALICE.key, ALICE)
        assert json.loads(anchor.signed) == msgspec.to_builtins(anchor.head)
        stores.keys.public_keys()[anchor.head.key_id].verify(anchor.signature, anchor.signed)
    assert head_problem(store, stores.keys) is None


def test_a_batch_anchors_its_last_event_and_a_redaction_keeps_the_anchor(stores, store):
    events = store.append_events([draft(), draft(), draft()])
    assert store.head_anchor().head.seq == events[-1].seq == 3
    store.append_events([draft(MemoryForgotten(memory_id="m", redacted_seqs=[1]))], redact_seqs=[1])
    assert store.head_anchor().head.seq == 4
    assert head_problem(store, stores.keys) is None


def test_a_retried_append_leaves_the_anchor_where_it_is(stores, store):
    first = draft()
    store.append_events([first])
    append_texts(store, "later")
    store.append_events([first])
    assert store.head_anchor().head.seq == 2


def test_a_reopened_log_keeps_its_head_anchor(stores, store):
    append_texts(store, "before close")
    anchor = store.head_anchor()
    store.close()
    assert stores.open(ALICE).head_anchor() == anchor


# ======================================================================== SQLite specifics


@pytest.fixture
def sqlite_log(data_dir: Path) -> Iterator[SqliteEventLog]:
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, KeyRing(data_dir))
    append_texts(log, "first memory", "second memory", "third memory")
    yield log
    log.close()


def raw(path: Path) -> sqlite3.Connection:
    # autocommit, so a statement a trigger aborts leaves no transaction (and lock) behind
    return sqlite3.connect(path, isolation_level=None)


CHANGED_VALUES = {
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
    "redacted": 1,  # without dropping the payload, this is not a redaction
}


@pytest.mark.parametrize("column", list(CHANGED_VALUES))
def test_sqlite_rejects_an_update_of_any_column_except_by_redaction(sqlite_log, column):
    before = sqlite_log.get_event(2)
    with closing(raw(sqlite_log.path)) as db:
        with pytest.raises(sqlite3.IntegrityError, match="only have its payload redacted"):
            db.execute(f"UPDATE events SET {column} = ? WHERE seq = 2", (CHANGED_VALUES[column],))
    assert sqlite_log.get_event(2) == before


def test_sqlite_rejects_a_redaction_that_also_changes_another_column(sqlite_log):
    with closing(raw(sqlite_log.path)) as db:
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE events SET payload = NULL, redacted = 1, actor_sub = 'x' WHERE seq = 2")
        db.execute("UPDATE events SET payload = NULL, redacted = 1 WHERE seq = 2")  # the one allowed change
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE events SET payload = ?, redacted = 0 WHERE seq = 2", (b"{}",))  # no un-redacting
    assert sqlite_log.get_event(2).redacted is True


def test_sqlite_rejects_any_delete(sqlite_log):
    with closing(raw(sqlite_log.path)) as db:
        for where in ("seq = 3", "seq = 1", "1 = 1"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(f"DELETE FROM events WHERE {where}")
    assert seqs(sqlite_log.read_events()) == [1, 2, 3]


def test_sqlite_rejects_an_insert_that_leaves_a_gap(sqlite_log):
    with closing(raw(sqlite_log.path)) as db:
        row = db.execute("SELECT * FROM events WHERE seq = 3").fetchone()
        with pytest.raises(sqlite3.IntegrityError, match="without a gap"):
            db.execute(f"INSERT INTO events VALUES ({', '.join('?' * len(row))})",
                       (5, new_uuid7(), *row[2:]))
    assert sqlite_log.last_seq() == 3


def test_sqlite_log_runs_in_wal_mode(sqlite_log):
    with closing(raw(sqlite_log.path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_stores_exactly_the_header_bytes_it_signed(sqlite_log, data_dir):
    public = KeyRing(data_dir).public_keys()  # as a verifier would load them, from disk
    with closing(raw(sqlite_log.path)) as db:
        rows = db.execute("SELECT seq, header, signature, entry_hash, key_id, payload, payload_sha256, "
                          "prev_hash FROM events ORDER BY seq").fetchall()
    assert len(rows) == 3
    prev = GENESIS_HASH
    for seq, header, signature, entry_hash, key_id, payload, payload_sha, prev_hash in rows:
        assert isinstance(header, bytes)
        public[key_id].verify(signature, header)  # raises InvalidSignature on any other bytes
        assert entry_hash == hashlib.sha256(header).hexdigest()
        fields = json.loads(header)
        assert list(fields) == ["format", "log", "owner", "seq", "event_id", "type", "schema_version",
                                "recorded_at", "actor", "request_id", "payload_sha256", "prev_hash", "key_id"]
        assert header == json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        assert (fields["seq"], fields["key_id"], fields["payload_sha256"], fields["prev_hash"]) == (
            seq, key_id, payload_sha, prev_hash)
        assert fields["owner"] == {"iss": ALICE.iss, "sub": ALICE.sub} and fields["log"] == ALICE.key
        assert payload_sha == hashlib.sha256(payload).hexdigest()
        assert prev_hash == prev
        prev = entry_hash


def test_sqlite_redaction_leaves_no_copy_of_the_payload_in_the_log_files(data_dir):
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, KeyRing(data_dir))
    marker = "zebra-passport-number-4711"
    append_texts(log, f"my {marker} is secret", "unrelated")
    log.append_events([draft(MemoryForgotten(memory_id="m", redacted_seqs=[1]))], redact_seqs=[1])
    try:
        files = [p for p in log.path.parent.iterdir() if p.name.startswith(LOG_FILE)]
        assert files
        for path in files:
            assert marker.encode() not in path.read_bytes(), f"{path.name} still holds the redacted text"
    finally:
        log.close()


def test_key_rotation_signs_later_events_with_the_new_key_and_old_events_still_verify(data_dir):
    keys = KeyRing(data_dir)
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, keys)
    old_kid = keys.active_key_id
    append_texts(log, "before one", "before two")

    new_kid = keys.rotate()
    append_texts(log, "after one", "after two")
    events = list(log.read_events())
    log.close()

    assert new_kid != old_kid
    assert [e.key_id for e in events] == [old_kid, old_kid, new_kid, new_kid]
    assert [json.loads(e.header)["key_id"] for e in events] == [old_kid, old_kid, new_kid, new_kid]
    reloaded = KeyRing(data_dir)
    assert reloaded.active_key_id == new_kid
    assert {r["kid"]: bool(r["retired_at"]) for r in reloaded.records()} == {old_kid: True, new_kid: False}
    assert {k["kid"] for k in reloaded.jwks()["keys"]} == {old_kid, new_kid}

    result = subprocess.run([MEMORY_CLI, "verify", "--data-dir", data_dir, "--user", "alice"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok alice: 4 events" in result.stdout


def test_signing_keys_are_files_only_their_owner_can_read(data_dir):
    keys = KeyRing(data_dir)
    keys.rotate()
    keys_dir = data_dir / "keys"

    pems = sorted(keys_dir.glob("*.pem"))
    assert len(pems) == 2
    for path in [*pems, keys_dir / "keyring.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert stat.S_IMODE(keys_dir.stat().st_mode) & 0o077 == 0


def test_sqlite_anchors_a_log_made_before_head_anchors_once_and_then_requires_its_anchor(data_dir):
    keys = KeyRing(data_dir)
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, keys)
    append_texts(log, "one", "two")
    log.close()
    head = log_path(data_dir, ALICE).with_name(HEAD_FILE)
    # what a data dir written by the code before anchors holds: no file, no mark in log_meta
    head.unlink()
    with closing(sqlite3.connect(log_path(data_dir, ALICE), isolation_level=None)) as db:
        db.execute("DELETE FROM log_meta WHERE key = 'anchored'")

    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, keys)
    assert log.head_anchor().head.seq == 2
    log.check_chain()
    log.close()
    head.unlink()
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, keys)
    assert log.head_anchor() is None
    with pytest.raises(LogIntegrityError, match="no head anchor"):
        log.check_chain()
    log.close()


def test_sqlite_an_unreadable_head_anchor_is_an_integrity_error(data_dir):
    keys = KeyRing(data_dir)
    log = SqliteEventLog(log_path(data_dir, ALICE), ALICE, keys)
    append_texts(log, "one")
    log_path(data_dir, ALICE).with_name(HEAD_FILE).write_bytes(b'{"head": "bm90')
    with pytest.raises(LogIntegrityError, match="head anchor of log .* cannot be read"):
        log.check_chain()
    log.close()
