"""Every person's log in one PostgreSQL database: `PostgresEventLog` and `PostgresLogDirectory`.

Two tables for all people: `logs` (one row per log: its owner, and its signed head anchor) and
`events` (keyed by (log_id, seq), event ids unique per log). Events are sealed by the same code as
SQLite's (`memory.log.seal_events`), so the stored header bytes, signatures and chain are the same
and `memory migrate` copies them verbatim.

An append is one transaction that first locks its log's row (`SELECT ... FOR UPDATE`): two
replicas appending to one person queue there, so the second numbers its events after the
first's and the chain never forks; the primary key (log_id, seq) and a gapless-insert trigger
refuse any row that would. As in SQLite, triggers refuse every DELETE and TRUNCATE of events and
every UPDATE except the redaction of a payload.

Replicas are told of each other's appends by a NOTIFY in the append's transaction
(memory/postgres_watch.py), and hold a person's lock across each other with an advisory lock
(memory/postgres_lock.py).

psycopg is the optional `[postgres]` extra: only this module and the two above import it, and only
`memory.logs.open_log_directory` imports this module, when a database URL is given.
"""

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import msgspec
import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool, PoolTimeout

from memory.errors import LogIntegrityError, StorageError
from memory.identity import Identity
from memory.log import (
    GENESIS_HASH,
    EventDraft,
    RawEvent,
    SignedHead,
    StoredEvent,
    canonical_time,
    check_batch_ids,
    check_chain,
    event_from_raw,
    existing_events,
    read_head,
    seal_events,
    sign_head,
)
from memory.logs import LogChanged, LogTally
from memory.pgpool import describe_url, error_reason
from memory.postgres_lock import AdvisoryLock, lock_pool
from memory.postgres_watch import NOTIFY_SQL, LogListener, notice
from memory.signing import KeyRing

__all__ = ["PostgresEventLog", "PostgresLogDirectory", "SCHEMA"]

#: Connections per process, shared by every person's log (a call holds one for a few ms).
_POOL_MAX = 10
_CONNECT_TIMEOUT_SECONDS = 10
_READ_CHUNK = 1000
#: Taken while the schema is created, so replicas starting together do not race on it.
_SCHEMA_LOCK = 0x6D656D6F7279  # "memory"

_COLUMNS = ", ".join(RawEvent._fields)
_IMMUTABLE = ", ".join(f"{{0}}.{c}" for c in ("log_id", *RawEvent._fields) if c not in ("payload", "redacted"))

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS logs (
    log_id text PRIMARY KEY,
    owner_iss text NOT NULL,
    owner_sub text NOT NULL,
    created_at text NOT NULL,
    -- The signed head anchor (memory.log.HeadAnchor as signed), rewritten by every append.
    head_signed bytea,
    head_signature bytea
);
CREATE TABLE IF NOT EXISTS events (
    log_id text NOT NULL REFERENCES logs (log_id),
    seq bigint NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    schema_version integer NOT NULL,
    recorded_at text NOT NULL,
    actor_sub text NOT NULL,
    actor_client_id text,
    request_id text,
    payload bytea,
    payload_sha256 text NOT NULL,
    prev_hash text NOT NULL,
    entry_hash text NOT NULL,
    key_id text NOT NULL,
    header bytea NOT NULL,
    signature bytea NOT NULL,
    redacted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (log_id, seq),
    UNIQUE (log_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_recorded_at ON events (log_id, recorded_at);

CREATE OR REPLACE FUNCTION events_are_gapless() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq IS DISTINCT FROM
       coalesce((SELECT max(seq) FROM events WHERE log_id = NEW.log_id), 0) + 1 THEN
        RAISE EXCEPTION 'event seq must follow the last one without a gap';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only';
END $$;
CREATE OR REPLACE FUNCTION events_change_only_by_redaction() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.redacted = false AND NEW.redacted = true AND NEW.payload IS NULL
       AND ({_IMMUTABLE.format("NEW")}) IS NOT DISTINCT FROM ({_IMMUTABLE.format("OLD")}) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'an event can only have its payload redacted';
END $$;
CREATE OR REPLACE FUNCTION logs_keep_their_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (NEW.log_id, NEW.owner_iss, NEW.owner_sub, NEW.created_at)
                           IS DISTINCT FROM (OLD.log_id, OLD.owner_iss, OLD.owner_sub, OLD.created_at) THEN
        RAISE EXCEPTION 'a log keeps its owner and is never deleted';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER events_are_gapless BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_gapless();
CREATE OR REPLACE TRIGGER events_are_never_deleted BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE OR REPLACE TRIGGER events_are_never_truncated BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
CREATE OR REPLACE TRIGGER events_change_only_by_redaction BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_change_only_by_redaction();
CREATE OR REPLACE TRIGGER logs_keep_their_owner BEFORE UPDATE OR DELETE ON logs
    FOR EACH ROW EXECUTE FUNCTION logs_keep_their_owner();
CREATE OR REPLACE TRIGGER logs_are_never_truncated BEFORE TRUNCATE ON logs
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
"""

_INSERT = f"INSERT INTO events (log_id, {_COLUMNS}) VALUES ({', '.join(['%s'] * (len(RawEvent._fields) + 1))})"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PostgresEventLog:
    """`EventStore` over the shared tables; `log_id` is the owner's key (another only in tests
    that open one person's log as someone else). `origin` names the appender in its notices."""

    def __init__(self, pool: ConnectionPool, owner: Identity, keys: KeyRing, *, log_id: str | None = None,
                 origin: str = ""):
        self._pool = pool
        self._origin = origin
        self._owner = owner
        self._keys = keys
        self._log_id = log_id or owner.key
        self._closed = False
        with self._connection() as conn, conn.transaction():
            conn.execute("INSERT INTO logs (log_id, owner_iss, owner_sub, created_at) VALUES (%s, %s, %s, %s) "
                         "ON CONFLICT (log_id) DO NOTHING", (self._log_id, owner.iss, owner.sub, _now()))
            found = conn.execute("SELECT owner_iss, owner_sub FROM logs WHERE log_id = %s", (self._log_id,)).fetchone()
        if tuple(found) != (owner.iss, owner.sub):
            raise LogIntegrityError(f"log {self._log_id} belongs to another user")

    @property
    def owner(self) -> Identity:
        return self._owner

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; the database being down or unreachable is a StorageError (the
        caller is told to retry), never an unexpected error."""
        if self._closed:
            raise StorageError("this event log was closed")
        try:
            with self._pool.connection(timeout=_CONNECT_TIMEOUT_SECONDS) as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            # A write whose COMMIT was cut off may or may not be in: its event id makes the retry safe.
            reason = error_reason(exc)
            raise StorageError(f"the database cannot be used right now ({reason}); retry, a retry with "
                               "the same event_id records a write at most once") from exc

    def append_events(self, drafts: Sequence[EventDraft], *, redact_seqs: Sequence[int] = ()) -> list[StoredEvent]:
        check_batch_ids(drafts)
        try:
            rows = self._append(drafts, redact_seqs)
        except psycopg.errors.UniqueViolation:
            # An event id already in the log (a retry): answered from what is stored, or refused.
            existing = self._existing(drafts)
            if existing is None:
                raise LogIntegrityError(f"log {self._log_id}: an append collided with a seq already there") from None
            return existing
        if redact_seqs:
            self.checkpoint()
        return [event_from_raw(r) for r in rows]

    def _append(self, drafts: Sequence[EventDraft], redact_seqs: Sequence[int]) -> list[RawEvent]:
        """Two round trips in a pipeline: BEGIN, the lock and the head; then the rows, the
        redactions, the new head anchor, the notice to other replicas and COMMIT. An event id
        already used fails the INSERT (unique per log) and rolls everything back, notice included."""
        with self._connection() as conn, conn.pipeline(), conn.transaction():
            # Every writer of this log, in any process on any machine, queues here; the head is
            # read after the lock is granted (READ COMMITTED: the latest committed append).
            conn.execute("SELECT 1 FROM logs WHERE log_id = %s FOR UPDATE", (self._log_id,))
            last = conn.execute("SELECT seq, entry_hash FROM events WHERE log_id = %s ORDER BY seq DESC LIMIT 1",
                                (self._log_id,)).fetchone()
            rows = seal_events(self._owner, self._keys, tuple(last) if last else None, drafts)
            with conn.cursor() as cur:
                cur.executemany(_INSERT, [(self._log_id, *row) for row in rows])
                if redact_seqs:
                    cur.executemany("UPDATE events SET payload = NULL, redacted = true "
                                    "WHERE log_id = %s AND seq = %s AND NOT redacted",
                                    [(self._log_id, s) for s in redact_seqs])
            # In the same transaction: the anchor can neither lead nor trail the log.
            self._store_head(conn, sign_head(self._owner, self._keys, rows[-1].seq, rows[-1].entry_hash))
            # Delivered at COMMIT, and only if it commits.
            conn.execute(NOTIFY_SQL, (notice(self._origin, rows[-1].seq, self._log_id),))
        return rows

    def _existing(self, drafts: Sequence[EventDraft]) -> list[StoredEvent] | None:
        with self._connection() as conn, conn.cursor(row_factory=class_row(RawEvent)) as cur:
            found = {r.event_id: r for r in cur.execute(
                f"SELECT {_COLUMNS} FROM events WHERE log_id = %s AND event_id = ANY(%s)",
                (self._log_id, [d.event_id for d in drafts]))}
        return existing_events(drafts, found)

    def copy_in(self, rows: Sequence[RawEvent]) -> None:
        """Append events sealed elsewhere (a SQLite log being migrated) byte for byte, redacted
        ones as redacted. They must continue this log: the next seq, linked to its head."""
        if not rows:
            return
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM logs WHERE log_id = %s FOR UPDATE", (self._log_id,))
            last = conn.execute("SELECT seq, entry_hash FROM events WHERE log_id = %s ORDER BY seq DESC LIMIT 1",
                                (self._log_id,)).fetchone()
            seq, prev = last if last else (0, GENESIS_HASH)
            for row in rows:
                if (row.seq, row.prev_hash) != (seq + 1, prev):
                    raise LogIntegrityError(f"log {self._log_id}: seq {row.seq} does not continue the log at seq {seq}")
                seq, prev = row.seq, row.entry_hash
            with conn.cursor() as cur:
                cur.executemany(_INSERT, [(self._log_id, *row[:-1], bool(row.redacted)) for row in rows])
            conn.execute(NOTIFY_SQL, (notice(self._origin, rows[-1].seq, self._log_id),))

    def redact(self, seqs: Sequence[int]) -> int:
        """Redact the payloads of `seqs` (a migrated log whose source was erased from since); how
        many were not redacted yet."""
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("UPDATE events SET payload = NULL, redacted = true "
                        "WHERE log_id = %s AND seq = ANY(%s) AND NOT redacted", (self._log_id, list(seqs)))
            changed = cur.rowcount
        if changed:
            self.checkpoint()
        return changed

    def _store_head(self, conn: psycopg.Connection, anchor: SignedHead) -> None:
        conn.execute("UPDATE logs SET head_signed = %s, head_signature = %s WHERE log_id = %s",
                     (anchor.signed, anchor.signature, self._log_id))

    def _read_rows(self, after_seq: int, to_seq: int | None) -> Iterator[RawEvent]:
        last = after_seq
        while True:
            with self._connection() as conn, conn.cursor(row_factory=class_row(RawEvent)) as cur:
                rows = cur.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE log_id = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
                    (self._log_id, last, to_seq if to_seq is not None else 2**62, _READ_CHUNK)).fetchall()
            yield from rows
            if len(rows) < _READ_CHUNK:
                return
            last = rows[-1].seq

    def read_events(self, after_seq: int = 0, to_seq: int | None = None) -> Iterator[StoredEvent]:
        for raw in self._read_rows(after_seq, to_seq):
            yield event_from_raw(raw)

    def read_raw(self, after_seq: int = 0) -> Iterator[RawEvent]:
        return self._read_rows(after_seq, None)

    def get_event(self, seq: int) -> StoredEvent | None:
        with self._connection() as conn, conn.cursor(row_factory=class_row(RawEvent)) as cur:
            row = cur.execute(f"SELECT {_COLUMNS} FROM events WHERE log_id = %s AND seq = %s",
                              (self._log_id, seq)).fetchone()
        return event_from_raw(row) if row else None

    def last_seq(self) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT coalesce(max(seq), 0) FROM events WHERE log_id = %s",
                                (self._log_id,)).fetchone()[0]

    def seq_at_time(self, timestamp: str) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT coalesce(max(seq), 0) FROM events WHERE log_id = %s AND recorded_at <= %s",
                                (self._log_id, canonical_time(timestamp))).fetchone()[0]

    def head_anchor(self) -> SignedHead | None:
        with self._connection() as conn:
            row = conn.execute("SELECT head_signed, head_signature FROM logs WHERE log_id = %s",
                               (self._log_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            return read_head(row[0], row[1] or b"")
        except msgspec.DecodeError as exc:
            raise LogIntegrityError(f"the head anchor of log {self._log_id} cannot be read: {exc}") from None

    def anchor_head(self) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM logs WHERE log_id = %s FOR UPDATE", (self._log_id,))
            last = conn.execute("SELECT seq, entry_hash FROM events WHERE log_id = %s ORDER BY seq DESC LIMIT 1",
                                (self._log_id,)).fetchone()
            if last:
                self._store_head(conn, sign_head(self._owner, self._keys, *last))

    def check_chain(self) -> None:
        check_chain(self, self._keys, self._log_id)

    def checkpoint(self) -> None:
        """VACUUM the events: a redaction's UPDATE leaves the old row version (payload included)
        in the table until then. PostgreSQL's own WAL files keep it until they are recycled."""
        with self._connection() as conn:
            conn.execute("VACUUM events")

    def close(self) -> None:
        self._closed = True  # the pool belongs to the directory: other logs go on using it


class PostgresLogDirectory:
    """Every log in one database, through one connection pool for the whole process (and one
    more, opened as needed, for the connections that hold a person's lock)."""

    def __init__(self, url: str, keys: KeyRing, *, pool_size: int = _POOL_MAX):
        self.keys = keys
        self._url = url
        # Names this process's appends in their notices, so its own listener skips them.
        self._origin = uuid.uuid4().hex[:16]
        try:
            # One plain connection first: a wrong URL or a server that is down fails here with
            # PostgreSQL's own reason, not after the pool's retries with a vague one.
            with psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_SECONDS) as conn:
                self._create_schema(conn)
        except psycopg.Error as exc:
            reason = error_reason(exc)
            raise StorageError(f"cannot use the database at {self}: {reason}") from None
        # Autocommit: a read is one round trip; writes open their transaction explicitly.
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, name="memory-logs",
                                    kwargs={"connect_timeout": _CONNECT_TIMEOUT_SECONDS, "autocommit": True})
        try:
            self._pool.open(wait=True, timeout=_CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout as exc:
            self._pool.close()
            raise StorageError(f"cannot connect to the database at {self}: {exc}") from exc
        self._locks = lock_pool(url, pool_size)
        self._listeners: list[LogListener] = []

    def __str__(self) -> str:
        return describe_url(self._url)  # never the password

    @staticmethod
    def _create_schema(conn: psycopg.Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(SCHEMA)

    def open(self, owner: Identity, *, log_id: str | None = None) -> PostgresEventLog:
        return PostgresEventLog(self._pool, owner, self.keys, log_id=log_id, origin=self._origin)

    def writer_lock(self, owner: Identity, *, processes: bool = False) -> AdvisoryLock:
        # Whatever this process is told: another replica, or a CLI command, may write this log.
        return AdvisoryLock(self._locks, owner.key)

    def watch(self, changed: LogChanged) -> LogListener:
        listener = LogListener(self._url, self._origin, changed)
        self._listeners.append(listener)
        return listener

    def exists(self, owner: Identity) -> bool:
        with self._pool.connection() as conn:
            return conn.execute("SELECT 1 FROM logs WHERE log_id = %s", (owner.key,)).fetchone() is not None

    def list_logs(self) -> Iterator[tuple[str, Identity]]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT log_id, owner_iss, owner_sub FROM logs ORDER BY log_id").fetchall()
        for log_id, iss, sub in rows:
            yield log_id, Identity(iss, sub)

    def tally(self, owner: Identity, since: str, operations: bool) -> LogTally:
        with self._pool.connection() as conn:
            events, last = conn.execute("SELECT count(*), max(recorded_at) FROM events WHERE log_id = %s",
                                        (owner.key,)).fetchone()
            by_type = dict(conn.execute("SELECT type, count(*) FROM events WHERE log_id = %s GROUP BY type",
                                        (owner.key,)).fetchall())
            reads = dict(conn.execute(
                "SELECT 'read:' || coalesce(convert_from(payload, 'UTF8')::jsonb ->> 'operation', 'redacted'), "
                "count(*) FROM events WHERE log_id = %s AND type = 'memories.read' GROUP BY 1",
                (owner.key,)).fetchall()) if operations else {}
            active = conn.execute("SELECT 1 FROM events WHERE log_id = %s AND recorded_at >= %s LIMIT 1",
                                  (owner.key, since)).fetchone() is not None
        return LogTally(events=events, last_event_at=last, by_type=by_type, reads=reads, active=active)

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._locks.close()
        self._pool.close()
