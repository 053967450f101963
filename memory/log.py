"""The event log: one per user, append-only, hash-chained and signed.

`EventStore` is the seam: the domain, verification, export and the CLI append and read through it
only. Two implementations: `SqliteEventLog` here (one SQLite file per user, the default) and
`PostgresEventLog` (memory/postgres_log.py, every user's log in one database). Both seal events
with the code in this module (`seal_events`, `sign_head`), so they store the same signed bytes,
and both run the same contract tests (tests/memory/test_log_contract.py).

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

import msgspec

from memory.errors import IdempotencyConflict, LogIntegrityError, StorageError
from cryptography.exceptions import InvalidSignature

from memory.events import SCHEMA_VERSIONS, Event, EventPayload, decode_payload, encode_payload, without_salt
from memory.identity import Actor, Identity
from memory.signing import KeyRing
from memory.wal import use_wal

__all__ = [
    "EventDraft",
    "EventHeader",
    "StoredEvent",
    "EventStore",
    "HeadAnchor",
    "RawEvent",
    "SignedHead",
    "SqliteEventLog",
    "head_problem",
    "check_chain",
    "check_batch_ids",
    "read_head",
    "seal_events",
    "sign_head",
    "existing_events",
    "event_from_raw",
    "canonical_time",
    "GENESIS_HASH",
    "log_path",
    "USERS_DIR",
    "LOG_FILE",
    "HEAD_FILE",
    "user_folder",
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


class RawEvent(NamedTuple):
    """One event as stored, payload undecoded: the columns of every backend, in this order.
    Verification reads these (it must not trust the decoder); `event_from_raw` decodes one."""

    seq: int
    event_id: str
    type: str
    schema_version: int
    recorded_at: str
    actor_sub: str
    actor_client_id: str | None
    request_id: str | None
    payload: bytes | None
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

    def read_raw(self, after_seq: int = 0) -> Iterator[RawEvent]:
        """Events as stored, payloads undecoded, in seq order: for verification and export."""
        ...

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

    def anchor_head(self) -> None:
        """Sign the log's head as it is now (a restored or migrated log: whoever put it there
        vouches for its end)."""
        ...

    def check_chain(self) -> None:
        """Raise LogIntegrityError naming the first seq whose row no longer matches its chain, or
        when the log does not reach its head anchor (`check_chain` below, the same for all)."""
        ...

    def checkpoint(self) -> None:
        """Leave no copy of redacted payloads in the backend's side files (SQLite's WAL)."""
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

_COLUMNS = ", ".join(RawEvent._fields)
_header_encoder = msgspec.json.Encoder()
_READ_CHUNK = 1000

logger = logging.getLogger("memory.log")


def user_folder(data_dir: str | Path, owner: Identity) -> Path:
    """Where this process keeps `owner`'s files: the SQLite log, and projections on any backend."""
    return Path(data_dir) / USERS_DIR / owner.key


def log_path(data_dir: str | Path, owner: Identity) -> Path:
    return Path(data_dir) / USERS_DIR / owner.key / LOG_FILE
    return user_folder(data_dir, owner) / LOG_FILE


# ------------------------------------------------------------ shared by every backend


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_time(timestamp: str) -> str:
    """`timestamp` (RFC 3339) in the one fixed-width UTC form recorded_at is stored in, so text
    order is time order on every backend."""
    when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_from_raw(raw: RawEvent) -> StoredEvent:
    return StoredEvent(
        seq=raw.seq,
        event_id=raw.event_id,
        type=raw.type,
        schema_version=raw.schema_version,
        recorded_at=raw.recorded_at,
        actor=Actor(raw.actor_sub, raw.actor_client_id),
        request_id=raw.request_id,
        payload=None if raw.payload is None else decode_payload(raw.payload, raw.type, raw.schema_version),
        payload_bytes=raw.payload,
        payload_sha256=raw.payload_sha256,
        prev_hash=raw.prev_hash,
        entry_hash=raw.entry_hash,
        key_id=raw.key_id,
        header=raw.header,
        signature=raw.signature,
        redacted=bool(raw.redacted),
    )


def seal_events(owner: Identity, keys: KeyRing, last: tuple[int, str] | None,
                drafts: Sequence[EventDraft]) -> list[RawEvent]:
    """The rows that append `drafts` after `last` (seq, entry hash; None for an empty log):
    numbered, chained, each header signed and kept as the exact bytes signed."""
    seq, prev_hash = last if last else (0, GENESIS_HASH)
    rows = []
    for draft in drafts:
        seq += 1
        payload = encode_payload(draft.payload)
        event_type = draft.payload.__struct_config__.tag
        payload_sha = hashlib.sha256(payload).hexdigest()
        recorded_at = _now()
        header = EventHeader(
            format=HEADER_FORMAT, log=owner.key, owner=owner, seq=seq,
            event_id=draft.event_id, type=event_type, schema_version=SCHEMA_VERSIONS[event_type],
            recorded_at=recorded_at, actor=draft.actor, request_id=draft.request_id,
            payload_sha256=payload_sha, prev_hash=prev_hash, key_id=keys.active_key_id,
        )
        header_bytes = _header_encoder.encode(header)
        key_id, signature = keys.sign(header_bytes, header.key_id)
        entry_hash = hashlib.sha256(header_bytes).hexdigest()
        rows.append(RawEvent(seq, draft.event_id, event_type, header.schema_version, recorded_at, draft.actor.sub,
                             draft.actor.client_id, draft.request_id, payload, payload_sha, prev_hash, entry_hash,
                             key_id, header_bytes, signature, False))
        prev_hash = entry_hash
    return rows


def sign_head(owner: Identity, keys: KeyRing, seq: int, entry_hash: str) -> SignedHead:
    head = HeadAnchor(format=HEAD_FORMAT, log=owner.key, owner=owner, seq=seq, entry_hash=entry_hash,
                      key_id=keys.active_key_id)
    signed = _header_encoder.encode(head)
    _, signature = keys.sign(signed, head.key_id)
    return SignedHead(head=head, signed=signed, signature=signature)


def read_head(signed: bytes, signature: bytes) -> SignedHead:
    """A stored head anchor back (raises msgspec.DecodeError when it is not one)."""
    return SignedHead(head=msgspec.json.decode(signed, type=HeadAnchor), signed=signed, signature=signature)


def check_batch_ids(drafts: Sequence[EventDraft]) -> list[str]:
    ids = [d.event_id for d in drafts]
    if len(set(ids)) != len(ids):
        raise IdempotencyConflict("a batch of events repeats an event id")
    return ids


def existing_events(drafts: Sequence[EventDraft], found: Mapping[str, RawEvent]) -> list[StoredEvent] | None:
    """What the log already holds under the drafts' event ids (`found`, by id): None when it holds
    none of them, their stored events when it holds all with the same content, else
    IdempotencyConflict."""
    if not found:
        return None
    if len(found) != len(drafts):
        raise IdempotencyConflict("some of these event ids were already used for other events")
    for draft in drafts:
        row = found[draft.event_id]
        # Payloads are salted (each attempt draws its own), so a retry is compared by what it
        # says. A redacted one cannot be compared; the retry gets the erased event back rather
        # than storing forgotten text again.
        same_payload = row.payload is None or without_salt(
            decode_payload(row.payload, row.type, row.schema_version)) == without_salt(draft.payload)
        if row.type != draft.payload.__struct_config__.tag or not same_payload:
            raise IdempotencyConflict(f"event id {draft.event_id} was already used for a different {row.type} event")
    return [event_from_raw(found[d.event_id]) for d in drafts]


def check_chain(store: EventStore, keys: KeyRing, name: str | None = None) -> None:
    """Raise LogIntegrityError naming the first seq whose row no longer matches its chain.

    The cheap part of `memory verify` (hashes and links, no signatures, a few µs an event), run
    before a log is served: a damaged log must stop its owner's calls, not grow on top of the
    damage or feed garbage to the projections."""
    expected_seq, prev_hash = 1, GENESIS_HASH
    name = name or store.owner.key
    for row in store.read_raw():
        if row.seq != expected_seq:
            problem = f"seq {expected_seq} is missing (found {row.seq})"
        elif row.prev_hash != prev_hash:
            problem = f"seq {row.seq} does not link to the previous event"
        elif not isinstance(row.header, bytes) or hashlib.sha256(row.header).hexdigest() != row.entry_hash:
            problem = f"seq {row.seq}: its header does not match its hash"
        elif row.payload is not None and hashlib.sha256(row.payload).hexdigest() != row.payload_sha256:
            problem = f"seq {row.seq}: its payload does not match its hash"
        else:
            expected_seq, prev_hash = row.seq + 1, row.entry_hash
            continue
        raise LogIntegrityError(f"the event log {name} is damaged: {problem}")
    cut = head_problem(store, keys)
    if cut is not None:
        raise LogIntegrityError(f"the event log {name} is damaged: {cut[1]}")


# ------------------------------------------------------------------------------ SQLite


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.row_factory = sqlite3.Row
    use_wal(db)
    db.execute("PRAGMA synchronous=FULL")
    # Appends write new pages at the end and catch-ups read them back once, in order: SQLite's
    # default 2 MB page cache per connection (two a person) held pages nothing reads again, and
    # filled as people stored (bench/soak.py), so the log keeps 256 KB, its B-trees' right edge.
    db.execute("PRAGMA cache_size=-256")
    # Erasure overwrites what it frees instead of leaving the old bytes in free pages.
    db.execute("PRAGMA secure_delete=ON")
    return db


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (the write lock up front, so two writers never deadlock upgrading), COMMIT
    when the block ends, ROLLBACK when it raises or the COMMIT fails (a full disk)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _raw(row: sqlite3.Row) -> RawEvent:
    return RawEvent(**{name: row[name] for name in RawEvent._fields})


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
        with self._write_lock, _transaction(self._writer) as db:
            meta = {row["key"]: row["value"] for row in db.execute("SELECT key, value FROM log_meta")}
            if not meta:
                db.executemany(
                    "INSERT INTO log_meta VALUES (?, ?)",
                    [("owner_iss", self._owner.iss), ("owner_sub", self._owner.sub),
                     ("log", self._owner.key), ("created_at", _now()), ("anchored", _now())],
                )
            elif (meta.get("owner_iss"), meta.get("owner_sub")) != (self._owner.iss, self._owner.sub):
                raise LogIntegrityError(f"{self._path} belongs to another user")

    def _anchor_unanchored_log(self) -> None:
        # A log made before head anchors existed gets its first one now (trusting its head as
        # found); from then on `anchored` says an anchor must be there.
        if not self._writer.execute("SELECT 1 FROM log_meta WHERE key = 'anchored'").fetchone():
            self.anchor_head()
            self._writer.execute("INSERT OR IGNORE INTO log_meta VALUES ('anchored', ?)", (_now(),))

    def anchor_head(self) -> None:
        with self._write_lock:
            last = self._writer.execute("SELECT seq, entry_hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            if last:
                self._write_head(last["seq"], last["entry_hash"])

    def _write_head(self, seq: int, entry_hash: str) -> None:
        """Sign the head and replace the anchor file with it. Called after the append's COMMIT has
        returned, so the log is durable up to `seq` before any anchor names it.

        Crash window: the file is replaced by rename but not fsynced (that would double the cost
        of every append, reads included). A crash between the commit and the rename, or before
        the rename reaches the disk, leaves the previous anchor: one that trails the log, which
        `head_problem` accepts. An anchor can never lead the durable log."""
        anchor = sign_head(self._owner, self._keys, seq, entry_hash)
        # Its own name per writer: two processes appending to one log never share a temp file.
        tmp = self._head_path.with_name(f".head.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(_header_encoder.encode(_HeadFile(head=anchor.signed, signature=anchor.signature)))
        os.replace(tmp, self._head_path)

    def head_anchor(self) -> SignedHead | None:
        try:
            data = self._head_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            stored = msgspec.json.decode(data, type=_HeadFile)
            return read_head(stored.head, stored.signature)
        except msgspec.DecodeError as exc:
            raise LogIntegrityError(f"the head anchor of log {self._path.parent.name} cannot be read: {exc}") from None

    def append_events(
        self, drafts: Sequence[EventDraft], *, redact_seqs: Sequence[int] = ()
    ) -> list[StoredEvent]:
        ids = check_batch_ids(drafts)
        with self._write_lock:
            try:
                with _transaction(self._writer) as db:
                    marks = ", ".join("?" * len(ids))
                    found = {r["event_id"]: _raw(r) for r in
                             db.execute(f"SELECT {_COLUMNS} FROM events WHERE event_id IN ({marks})", ids)}
                    existing = existing_events(drafts, found)
                    if existing is not None:
                        return existing
                    last = db.execute("SELECT seq, entry_hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
                    rows = seal_events(self._owner, self._keys, tuple(last) if last else None, drafts)
                    db.executemany(f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * len(RawEvent._fields))})",
                                   rows)
                    if redact_seqs:
                        db.executemany("UPDATE events SET payload = NULL, redacted = 1 WHERE seq = ? AND redacted = 0",
                                       [(s,) for s in redact_seqs])
            except sqlite3.OperationalError as exc:
                # A locked or full disk: SQLite rolled the transaction back (or `_transaction` did).
                raise StorageError(f"cannot write the event log, nothing was recorded: {exc}") from exc
            try:
                self._write_head(rows[-1].seq, rows[-1].entry_hash)
            except OSError as exc:
                # The events are durable and answered as such; the anchor trails until an append
                # finds room for it again (a trailing anchor is one verify accepts).
                logger.warning("the head anchor of log %s stays behind seq %d: %s",
                               self._path.parent.name[:12], rows[-1].seq, exc)
            if redact_seqs:
                # Leave no copy of a redacted payload in the WAL file.
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return [event_from_raw(r) for r in rows]

    def _read_rows(self, after_seq: int, to_seq: int | None) -> Iterator[RawEvent]:
        last = after_seq
        while True:
            with self._read_lock:
                rows = self._reader.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (last, to_seq if to_seq is not None else 2**62, _READ_CHUNK),
                ).fetchall()
            for row in rows:
                yield _raw(row)
            if len(rows) < _READ_CHUNK:
                return
            last = rows[-1]["seq"]

    def read_events(self, after_seq: int = 0, to_seq: int | None = None) -> Iterator[StoredEvent]:
        for raw in self._read_rows(after_seq, to_seq):
            yield event_from_raw(raw)

    def read_raw(self, after_seq: int = 0) -> Iterator[RawEvent]:
        return self._read_rows(after_seq, None)

    def check_chain(self) -> None:
        try:
            check_chain(self, self._keys, self._path.parent.name)
        except sqlite3.DatabaseError as exc:
            raise LogIntegrityError(f"the event log {self._path.parent.name} cannot be read: {exc}") from exc

    def get_event(self, seq: int) -> StoredEvent | None:
        with self._read_lock:
            row = self._reader.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
        return event_from_raw(_raw(row)) if row else None

    def last_seq(self) -> int:
        with self._read_lock:
            return self._reader.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    def seq_at_time(self, timestamp: str) -> int:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT coalesce(max(seq), 0) FROM events WHERE recorded_at <= ?", (canonical_time(timestamp),)
            ).fetchone()
        return row[0]

    def checkpoint(self) -> None:
        with self._write_lock:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._reader.close()
            self._writer.close()


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
