"""The event log: one SQLite file per user, append-only, hash-chained and signed.

`EventStore` is the seam: the domain appends and reads through it only, so a PostgreSQL-backed
store can replace `SqliteEventLog` without touching anything above it. Every implementation runs
the same contract tests (tests/memory/test_log_contract.py).

Each event's header (the signed bytes, stored as signed) commits to the payload's SHA-256 rather
than the payload itself: erasure can later remove a payload and the chain still verifies.

The chain cannot show that events were cut from its end, so each store also keeps a signed head
anchor (`SignedHead`: the last seq and its entry hash) outside the log; `head_problem` checks a log
against it.
"""

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import msgspec

from memory.errors import IdempotencyConflict, LogIntegrityError, StorageError
from cryptography.exceptions import InvalidSignature

from memory.events import SCHEMA_VERSIONS, Event, EventPayload, decode_payload, encode_payload, without_salt
from memory.identity import Actor, Identity
from memory.signing import KeyRing

__all__ = [
    "EventDraft",
    "EventHeader",
    "StoredEvent",
    "EventStore",
    "HeadAnchor",
    "SignedHead",
    "SqliteEventLog",
    "head_problem",
    "GENESIS_HASH",
    "log_path",
    "USERS_DIR",
    "LOG_FILE",
    "HEAD_FILE",
]

#: `<data_dir>/users/<user key>/` holds one person's files: the log, its signed head anchor, and
#: the projections derived from it (projections.base.PROJECTIONS_FILE).
USERS_DIR = "users"
LOG_FILE = "events.sqlite"
HEAD_FILE = "head.json"

GENESIS_HASH = "0" * 64
HEADER_FORMAT = 1
HEAD_FORMAT = "memory-head"


class EventDraft(msgspec.Struct, frozen=True):
    """What the domain asks to append; the log adds seq, time, chain and signature."""

    event_id: str
    payload: EventPayload
    actor: Actor
    request_id: str | None = None


class EventHeader(msgspec.Struct, frozen=True):
    """The signed bytes are this struct encoded compactly, fields in this order."""

    format: int
    log: str
    owner: Identity
    seq: int
    event_id: str
    type: str
    schema_version: int
    recorded_at: str
    actor: Actor
    request_id: str | None
    payload_sha256: str
    prev_hash: str
    key_id: str


class StoredEvent(msgspec.Struct, frozen=True):
    seq: int
    event_id: str
    type: str
    schema_version: int
    recorded_at: str
    actor: Actor
    request_id: str | None
    payload: Event | None  # None once redacted
    payload_bytes: bytes | None
    payload_sha256: str
    prev_hash: str
    entry_hash: str
    key_id: str
    header: bytes
    signature: bytes
    redacted: bool


class HeadAnchor(msgspec.Struct, frozen=True):
    """The signed bytes of a head anchor are this struct encoded compactly, fields in this order."""

    format: str
    log: str
    owner: Identity
    seq: int
    entry_hash: str
    key_id: str


class SignedHead(msgspec.Struct, frozen=True):
    """A log's head as the store signed it after an append: `signed` is `head` as signed."""

    head: HeadAnchor
    signed: bytes
    signature: bytes


class _HeadFile(msgspec.Struct, frozen=True):
    head: bytes  # base64 in the file
    signature: bytes


class EventStore(Protocol):
    """One user's log. Appends are atomic and gapless; reads are in seq order."""

    @property
    def owner(self) -> Identity: ...

    def append_events(
        self, drafts: Sequence[EventDraft], *, redact_seqs: Sequence[int] = ()
    ) -> list[StoredEvent]:
        """Append all drafts in one transaction (and redact `redact_seqs` in it too).

        A draft whose event_id is already in the log with the same type and payload is not
        appended again: its stored event is returned. Other content under a known id raises
        IdempotencyConflict, and nothing is appended."""
        ...

    def read_events(self, after_seq: int = 0, to_seq: int | None = None) -> Iterator[StoredEvent]: ...

    def get_event(self, seq: int) -> StoredEvent | None: ...

    def last_seq(self) -> int: ...

    def seq_at_time(self, timestamp: str) -> int:
        """The last seq recorded at or before `timestamp` (RFC 3339, UTC), 0 if none."""
        ...

    def head_anchor(self) -> SignedHead | None:
        """The head signed after the last append, kept apart from the log (a second file, another
        table space): it may trail the log, never lead it. None only for a log with no events;
        raises LogIntegrityError when the anchor is there but unreadable."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    actor_sub TEXT NOT NULL,
    actor_client_id TEXT,
    request_id TEXT,
    payload BLOB,
    payload_sha256 TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL,
    key_id TEXT NOT NULL,
    header BLOB NOT NULL,
    signature BLOB NOT NULL,
    redacted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_recorded_at ON events(recorded_at);
CREATE TRIGGER IF NOT EXISTS events_are_gapless BEFORE INSERT ON events
WHEN NEW.seq IS NOT coalesce((SELECT max(seq) FROM events), 0) + 1
BEGIN SELECT RAISE(ABORT, 'event seq must follow the last one without a gap'); END;
CREATE TRIGGER IF NOT EXISTS events_are_never_deleted BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_change_only_by_redaction BEFORE UPDATE ON events
WHEN NOT (OLD.redacted = 0 AND NEW.redacted = 1 AND NEW.payload IS NULL
    AND NEW.seq IS OLD.seq AND NEW.event_id IS OLD.event_id AND NEW.type IS OLD.type
    AND NEW.schema_version IS OLD.schema_version AND NEW.recorded_at IS OLD.recorded_at
    AND NEW.actor_sub IS OLD.actor_sub AND NEW.actor_client_id IS OLD.actor_client_id
    AND NEW.request_id IS OLD.request_id AND NEW.payload_sha256 IS OLD.payload_sha256
    AND NEW.prev_hash IS OLD.prev_hash AND NEW.entry_hash IS OLD.entry_hash
    AND NEW.key_id IS OLD.key_id AND NEW.header IS OLD.header AND NEW.signature IS OLD.signature)
BEGIN SELECT RAISE(ABORT, 'an event can only have its payload redacted'); END;
"""

_COLUMNS = (
    "seq, event_id, type, schema_version, recorded_at, actor_sub, actor_client_id, request_id, "
    "payload, payload_sha256, prev_hash, entry_hash, key_id, header, signature, redacted"
)
_header_encoder = msgspec.json.Encoder()
_READ_CHUNK = 1000

logger = logging.getLogger("memory.log")


def log_path(data_dir: str | Path, owner: Identity) -> Path:
    return Path(data_dir) / USERS_DIR / owner.key / LOG_FILE


def head_problem(store: EventStore, keys: KeyRing) -> tuple[int | None, str] | None:
    """(seq, message) when `store`'s log does not reach its signed head anchor: events were cut
    from its end, or the event at the anchor's seq is another one. None when it does."""
    try:
        anchor = store.head_anchor()
    except LogIntegrityError as exc:
        return None, str(exc)
    last = store.last_seq()
    if anchor is None:
        return (None, "the log has events but no head anchor: it was deleted") if last else None
    head = anchor.head
    key = keys.public_keys().get(head.key_id)
    try:
        if key is None:
            return None, f"the head anchor is signed by key {head.key_id!r}, which this server never had"
        key.verify(anchor.signature, anchor.signed)
    except InvalidSignature:
        return None, "the head anchor's signature does not verify"
    if head.format != HEAD_FORMAT or head.log != store.owner.key or head.owner != store.owner:
        return None, "the head anchor belongs to another log"
    if head.seq > last:
        return head.seq, (f"the log ends at seq {last} but its signed head anchor is seq {head.seq}: "
                          f"events {last + 1}..{head.seq} were cut from its end")
    event = store.get_event(head.seq)
    if event is None or event.entry_hash != head.entry_hash:
        return head.seq, f"seq {head.seq} is not the event its signed head anchor names (another entry hash)"
    return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    # Erasure overwrites what it frees instead of leaving the old bytes in free pages.
    db.execute("PRAGMA secure_delete=ON")
    return db


def _row_to_event(row: tuple) -> StoredEvent:
    (seq, event_id, type_, version, recorded_at, actor_sub, actor_client, request_id,
     payload, payload_sha, prev_hash, entry_hash, key_id, header, signature, redacted) = row
    return StoredEvent(
        seq=seq,
        event_id=event_id,
        type=type_,
        schema_version=version,
        recorded_at=recorded_at,
        actor=Actor(actor_sub, actor_client),
        request_id=request_id,
        payload=None if payload is None else decode_payload(payload, type_, version),
        payload_bytes=payload,
        payload_sha256=payload_sha,
        prev_hash=prev_hash,
        entry_hash=entry_hash,
        key_id=key_id,
        header=header,
        signature=signature,
        redacted=bool(redacted),
    )


class SqliteEventLog:
    """`EventStore` on one SQLite file in WAL mode, fsynced on every commit."""

    def __init__(self, path: str | Path, owner: Identity, keys: KeyRing):
        self._path = Path(path)
        self._owner = owner
        self._keys = keys
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._writer = _connect(self._path)
        except sqlite3.DatabaseError as exc:
            raise LogIntegrityError(f"the event log {self._path.parent.name} cannot be read: {exc}") from exc
        try:
            self._writer.executescript(_SCHEMA)
            self._claim_owner()
        except sqlite3.DatabaseError as exc:
            self._writer.close()
            raise LogIntegrityError(f"the event log {self._path.parent.name} cannot be read: {exc}") from exc
        except BaseException:
            self._writer.close()
            raise
        self._reader = _connect(self._path)
        self._head_path = self._path.with_name(HEAD_FILE)
        try:
            self._anchor_unanchored_log()
        except BaseException:
            self.close()
            raise

    @property
    def owner(self) -> Identity:
        return self._owner

    @property
    def path(self) -> Path:
        return self._path

    def _claim_owner(self) -> None:
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                rows = dict(self._writer.execute("SELECT key, value FROM log_meta"))
                if not rows:
                    self._writer.executemany(
                        "INSERT INTO log_meta VALUES (?, ?)",
                        [("owner_iss", self._owner.iss), ("owner_sub", self._owner.sub),
                         ("log", self._owner.key), ("created_at", _now()), ("anchored", _now())],
                    )
                elif (rows.get("owner_iss"), rows.get("owner_sub")) != (self._owner.iss, self._owner.sub):
                    raise LogIntegrityError(f"{self._path} belongs to another user")
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise

    def _anchor_unanchored_log(self) -> None:
        # A log made before head anchors existed gets its first one now (trusting its head as
        # found); from then on `anchored` says an anchor must be there.
        if not self._writer.execute("SELECT 1 FROM log_meta WHERE key = 'anchored'").fetchone():
            self.anchor_head()
            self._writer.execute("INSERT OR IGNORE INTO log_meta VALUES ('anchored', ?)", (_now(),))

    def anchor_head(self) -> None:
        """Sign the log's head as it is now: for a log that has none yet, or one restored from a
        backup (whoever restores it vouches for its end)."""
        with self._write_lock:
            last = self._writer.execute("SELECT seq, entry_hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            if last:
                self._write_head(*last)

    def _write_head(self, seq: int, entry_hash: str) -> None:
        """Sign the head and replace the anchor file with it. Called after the append's COMMIT has
        returned, so the log is durable up to `seq` before any anchor names it.

        Crash window: the file is replaced by rename but not fsynced (that would double the cost
        of every append, reads included). A crash between the commit and the rename, or before
        the rename reaches the disk, leaves the previous anchor: one that trails the log, which
        `head_problem` accepts. An anchor can never lead the durable log."""
        head = HeadAnchor(format=HEAD_FORMAT, log=self._owner.key, owner=self._owner, seq=seq,
                          entry_hash=entry_hash, key_id=self._keys.active_key_id)
        signed = _header_encoder.encode(head)
        _, signature = self._keys.sign(signed, head.key_id)
        # Its own name per writer: two processes appending to one log never share a temp file.
        tmp = self._head_path.with_name(f".head.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(_header_encoder.encode(_HeadFile(head=signed, signature=signature)))
        os.replace(tmp, self._head_path)

    def head_anchor(self) -> SignedHead | None:
        try:
            data = self._head_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            stored = msgspec.json.decode(data, type=_HeadFile)
            return SignedHead(head=msgspec.json.decode(stored.head, type=HeadAnchor), signed=stored.head,
                              signature=stored.signature)
        except msgspec.DecodeError as exc:
            raise LogIntegrityError(f"the head anchor of log {self._path.parent.name} cannot be read: {exc}") from None

    def append_events(
        self, drafts: Sequence[EventDraft], *, redact_seqs: Sequence[int] = ()
    ) -> list[StoredEvent]:
        encoded = [(d, encode_payload(d.payload)) for d in drafts]
        with self._write_lock:
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageError(f"cannot write the event log, nothing was recorded: {exc}") from exc
            try:
                existing = self._existing(db, encoded)
                if existing is not None:
                    db.execute("ROLLBACK")
                    return existing
                last = db.execute("SELECT seq, entry_hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev_hash = last if last else (0, GENESIS_HASH)
                rows = []
                for draft, payload in encoded:
                    seq += 1
                    row = self._sealed_row(seq, prev_hash, draft, payload)
                    prev_hash = row[11]
                    rows.append(row)
                db.executemany(f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * 16)})", rows)
                if redact_seqs:
                    db.executemany(
                        "UPDATE events SET payload = NULL, redacted = 1 WHERE seq = ? AND redacted = 0",
                        [(s,) for s in redact_seqs],
                    )
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                # A full disk makes SQLite roll the transaction back itself.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StorageError(f"cannot write the event log, nothing was recorded: {exc}") from exc
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            try:
                self._write_head(rows[-1][0], rows[-1][11])
            except OSError as exc:
                # The events are durable and answered as such; the anchor trails until an append
                # finds room for it again (a trailing anchor is one verify accepts).
                logger.warning("the head anchor of log %s stays behind seq %d: %s",
                               self._path.parent.name[:12], rows[-1][0], exc)
            if redact_seqs:
                # Leave no copy of a redacted payload in the WAL file.
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return [_row_to_event(r) for r in rows]

    def _existing(self, db: sqlite3.Connection, encoded: list[tuple[EventDraft, bytes]]) -> list[StoredEvent] | None:
        ids = [d.event_id for d, _ in encoded]
        if len(set(ids)) != len(ids):
            raise IdempotencyConflict("a batch of events repeats an event id")
        marks = ", ".join("?" * len(ids))
        found = {r[1]: r for r in db.execute(f"SELECT {_COLUMNS} FROM events WHERE event_id IN ({marks})", ids)}
        if not found:
            return None
        if len(found) != len(ids):
            raise IdempotencyConflict("some of these event ids were already used for other events")
        for draft, _ in encoded:
            row = found[draft.event_id]
            # Payloads are salted (each attempt draws its own), so a retry is compared by what it
            # says. A redacted one cannot be compared; the retry gets the erased event back rather
            # than storing forgotten text again.
            same_payload = row[8] is None or without_salt(decode_payload(row[8], row[2], row[3])) == without_salt(
                draft.payload)
            if row[2] != draft.payload.__struct_config__.tag or not same_payload:
                raise IdempotencyConflict(
                    f"event id {draft.event_id} was already used for a different {row[2]} event"
                )
        return [_row_to_event(found[i]) for i in ids]

    def _sealed_row(self, seq: int, prev_hash: str, draft: EventDraft, payload: bytes) -> tuple:
        event_type = draft.payload.__struct_config__.tag
        payload_sha = hashlib.sha256(payload).hexdigest()
        recorded_at = _now()
        header = EventHeader(
            format=HEADER_FORMAT, log=self._owner.key, owner=self._owner, seq=seq,
            event_id=draft.event_id, type=event_type, schema_version=SCHEMA_VERSIONS[event_type],
            recorded_at=recorded_at, actor=draft.actor, request_id=draft.request_id,
            payload_sha256=payload_sha, prev_hash=prev_hash, key_id=self._keys.active_key_id,
        )
        header_bytes = _header_encoder.encode(header)
        key_id, signature = self._keys.sign(header_bytes, header.key_id)
        entry_hash = hashlib.sha256(header_bytes).hexdigest()
        return (seq, draft.event_id, event_type, header.schema_version, recorded_at, draft.actor.sub,
                draft.actor.client_id, draft.request_id, payload, payload_sha, prev_hash, entry_hash,
                key_id, header_bytes, signature, 0)

    def read_events(self, after_seq: int = 0, to_seq: int | None = None) -> Iterator[StoredEvent]:
        last = after_seq
        while True:
            with self._read_lock:
                rows = self._reader.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (last, to_seq if to_seq is not None else 2**62, _READ_CHUNK),
                ).fetchall()
            for row in rows:
                yield _row_to_event(row)
            if len(rows) < _READ_CHUNK:
                return
            last = rows[-1][0]

    def read_raw(self, after_seq: int = 0) -> Iterator[tuple]:
        """Rows as stored, payloads undecoded: for verification, which must not trust the decoder."""
        last = after_seq
        while True:
            with self._read_lock:
                rows = self._reader.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (last, _READ_CHUNK)
                ).fetchall()
            yield from rows
            if len(rows) < _READ_CHUNK:
                return
            last = rows[-1][0]

    def check_chain(self) -> None:
        """Raise LogIntegrityError naming the first seq whose row no longer matches its chain.

        The cheap part of `memory verify` (hashes and links, no signatures, a few µs an event), run
        before a log is served: a damaged log must stop its owner's calls, not grow on top of the
        damage or feed garbage to the projections."""
        expected_seq, prev_hash = 1, GENESIS_HASH
        try:
            for row in self.read_raw():
                seq, payload, payload_sha, row_prev, entry_hash, header = (row[0], *row[8:12], row[13])
                if seq != expected_seq:
                    problem = f"seq {expected_seq} is missing (found {seq})"
                elif row_prev != prev_hash:
                    problem = f"seq {seq} does not link to the previous event"
                elif not isinstance(header, bytes) or hashlib.sha256(header).hexdigest() != entry_hash:
                    problem = f"seq {seq}: its header does not match its hash"
                elif payload is not None and hashlib.sha256(payload).hexdigest() != payload_sha:
                    problem = f"seq {seq}: its payload does not match its hash"
                else:
                    expected_seq, prev_hash = seq + 1, entry_hash
                    continue
                raise LogIntegrityError(f"the event log {self._path.parent.name} is damaged: {problem}")
            cut = head_problem(self, self._keys)
        except sqlite3.DatabaseError as exc:
            raise LogIntegrityError(f"the event log {self._path.parent.name} cannot be read: {exc}") from exc
        if cut is not None:
            raise LogIntegrityError(f"the event log {self._path.parent.name} is damaged: {cut[1]}")

    def get_event(self, seq: int) -> StoredEvent | None:
        with self._read_lock:
            row = self._reader.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
        return _row_to_event(row) if row else None

    def last_seq(self) -> int:
        with self._read_lock:
            return self._reader.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    def seq_at_time(self, timestamp: str) -> int:
        # recorded_at is stored in one fixed-width UTC form, so text order is time order once the
        # question is spelled the same way.
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        canonical = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._read_lock:
            row = self._reader.execute(
                "SELECT coalesce(max(seq), 0) FROM events WHERE recorded_at <= ?", (canonical,)
            ).fetchone()
        return row[0]

    def checkpoint(self) -> None:
        with self._write_lock:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._reader.close()
            self._writer.close()
