"""One user's log and projections kept in step, and the directory of all users' stores.

Each user has a folder `<data_dir>/users/<hash of identity>/` holding `events.sqlite` (the log,
the truth) and `projections.sqlite` (derived; deleted or corrupted, it is rebuilt on open).
Every user has a lock of their own, so one user's writes never hold up another user's reads.

Several processes may serve one data directory (`memory serve --workers N`). Each keeps
projections of its own (`projections.worker<k>.sqlite`; the first worker the plain name): a cache
is only ever written by the process that reads it, so its in-memory state (the vector index, the
checkpoints) never goes stale behind its back. What another process appended is caught up by
seq: `UserStore.follow` before every call, and a poll of the open logs for erasure
(`UserDirectory.follow_open`). Both use only `last_seq` and `read_events` of the `EventStore`.
"""

import logging
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from pathlib import Path

from memory.errors import StorageError
from memory.events import MemoryStored, MemoryUpdated
from memory.identity import Identity
from memory.log import EventDraft, SqliteEventLog, StoredEvent, log_path
from memory.signing import KeyRing
from memory.userlock import UserLock
from projections.base import ProjectionSet, open_projection_db
from projections.duplicates import TextKeysProjection
from projections.embedder import Embedder
from projections.embeddings import EmbeddingsProjection, create_cache
from projections.entities import EntitiesProjection
from projections.fulltext import FullTextProjection
from projections.links import LinksProjection
from projections.memories import MemoriesProjection

__all__ = ["UserStore", "ProjectionView", "UserDirectory", "build_projections", "list_logs", "projection_file",
           "remove_replicas"]

# Read connections kept open per user: enough for the calls one person's assistants make at once.
_IDLE_READERS = 4
# The one projection whose work (a model call) may follow the answer to a write.
_EMBEDDINGS = frozenset({"embeddings"})

logger = logging.getLogger("memory.userstore")
_REPLICA_FILE = re.compile(r"^projections\.worker(\d+)\.sqlite(-wal|-shm)?$")


def projection_file(replica: int = 0) -> str:
    """The name of a user's projection file for worker `replica` (0: the one every command reads)."""
    return "projections.sqlite" if replica == 0 else f"projections.worker{replica}.sqlite"


def remove_replicas(data_dir: str | Path, keep: int) -> int:
    """Delete the projection files of workers `keep` and above: a cache no process follows any
    more would keep the text of memories forgotten after it stopped. Run before workers start."""
    removed = 0
    for path in (Path(data_dir) / "users").glob("*/projections.worker*.sqlite*"):
        found = _REPLICA_FILE.match(path.name)
        if found and int(found.group(1)) >= keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _text_to_embed(payload: object) -> str | None:
    if isinstance(payload, MemoryStored | MemoryUpdated) and isinstance(payload.text, str):
        return payload.text
    return None


class ProjectionView:
    """Projections to read from: the live ones, or a point-in-time copy built in memory."""

    def __init__(self, projections: ProjectionSet, embeddings: EmbeddingsProjection):
        self.projections = projections
        self.embeddings = embeddings

    @property
    def db(self) -> sqlite3.Connection:
        return self.projections.db

    @property
    def checkpoint(self) -> int:
        return self.projections.checkpoint


def build_projections(
    db: sqlite3.Connection, embedder: Embedder, cache_db: sqlite3.Connection | None = None
) -> ProjectionView:
    embeddings = EmbeddingsProjection(embedder, cache_db)
    projections = ProjectionSet(
        db, [MemoriesProjection(), FullTextProjection(), EntitiesProjection(), LinksProjection(), TextKeysProjection(),
            embeddings]
    )
    return ProjectionView(projections, embeddings)


class UserStore:
    """`background`, when given, runs the embeddings' catch-up after a write has been answered:
    a store is acknowledged once it is in the log and the other projections, and a read that
    needs the vectors (`catch_up_embeddings`) waits for them. Without it every write embeds
    before it returns."""

    def __init__(self, data_dir: Path, owner: Identity, keys: KeyRing, embedder: Embedder,
                 background: Executor | None = None, replica: int | None = None):
        """`replica`: None when this process alone serves `data_dir`; else which of several
        worker processes this is (memory/userlock.py, `follow`)."""
        self.owner = owner
        self.embedder = embedder
        self._background = background
        self._embedding = threading.Lock()
        self.log = SqliteEventLog(log_path(data_dir, owner), owner, keys)
        try:
            self.log.check_chain()
        except BaseException:
            self.log.close()
            raise
        self.lock = UserLock(None if replica is None else self.log.path.parent / "writer.lock")
        self._projection_path = self.log.path.parent / projection_file(replica or 0)
        # Workers after the first share its vector cache: a text one worker embedded is not
        # embedded again by the others as they follow the log, nor when one starts cold.
        self._cache_db: sqlite3.Connection | None = None
        if replica:
            self._cache_db = open_projection_db(self.log.path.parent / projection_file(0))
            create_cache(self._cache_db)
        # Set when `follow` applied an erasure made by another process: the forgotten text may
        # still sit in old pages of the WAL until it is checkpointed and emptied (`settle`).
        self._followed = False
        self.view = self._open_view()
        if self.view.checkpoint > self.log.last_seq():
            # Projections of a longer log (the log was restored from an older backup): they
            # describe events that are not there, so start again from what is.
            self.view.projections.rebuild(self.log)
        self.view.embeddings.load_index(self.view.db)
        self.catch_up()
        # From now on whoever takes the lock first sees what other processes appended.
        self.lock.on_acquire = self.follow
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()

    def _open_view(self) -> ProjectionView:
        try:
            db = open_projection_db(self._projection_path)
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            return build_projections(db, self.embedder, self._cache_db)
        except sqlite3.DatabaseError:
            # Derived data only: set the damaged file aside and rebuild from the log.
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self._projection_path}{suffix}").unlink(missing_ok=True)
            return build_projections(open_projection_db(self._projection_path), self.embedder, self._cache_db)

    def catch_up(self, to_seq: int | None = None, progress: Callable[[int], None] | None = None,
                 skip: frozenset[str] = frozenset()) -> int:
        # This process's lock only: applying events to its own projection files is no business
        # of the other workers, so a read catching up does not queue behind their appends.
        with self.lock.local:
            try:
                return self.view.projections.catch_up(self.log, to_seq, progress, skip)
            except BaseException as exc:
                self.view.embeddings.load_index(self.view.db)
                if isinstance(exc, sqlite3.OperationalError):
                    # A full disk or a failing device: the log is whole, only its cache lags, so the
                    # caller gets a storage error (507) to retry, never an unexpected one.
                    raise StorageError(f"cannot update the indexes ({exc}); retry once the disk has room") from exc
                raise

    def follow(self) -> int:
        """Apply what other processes appended to the log since this one last looked (read your
        writes across workers); how many events. One look at the log's head when there are none.
        The embeddings are left to `catch_up_embeddings`, as after an append of this process."""
        applied, head = self._applied(), self.log.last_seq()
        if head <= applied:
            return 0
        # Usually a few events: reading their types twice costs less than emptying the WAL
        # after every one of them.
        if any(event.type == "memory.forgotten" for event in self.log.read_events(applied, head)):
            self._followed = True
        return self.catch_up(skip=_EMBEDDINGS)

    def _applied(self) -> int:
        return min((c for n, c in self.view.projections.checkpoints().items() if n not in _EMBEDDINGS), default=0)

    def settle(self) -> None:
        """After following other processes: bring the embeddings up too, and after an erasure
        checkpoint the WAL so it leaves no old page behind (`MemoryService.forget` does the same
        for its own)."""
        self.catch_up_embeddings()
        if self._followed:
            self._followed = False
            if not self._truncate_wal():
                self._followed = True  # readers were in the way: the next poll tries again

    def _truncate_wal(self) -> bool:
        """Checkpoint the projections' WAL and empty it, on a connection of its own and outside
        the locks, giving up after a moment: a ranking that holds a read transaction may be
        waiting for this person's lock, and a checkpoint waits for every reader."""
        db = sqlite3.connect(self._projection_path, timeout=0.2)
        try:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return busy == 0
        except sqlite3.OperationalError:
            return False
        finally:
            db.close()

    @property
    def embeddings_behind(self) -> bool:
        return self.view.projections.checkpoints()["embeddings"] < self.log.last_seq()

    def catch_up_embeddings(self) -> None:
        """Bring the embeddings up to the log's head: the texts are embedded outside the lock,
        then applied inside it with their vectors ready. One catch-up per user at a time; a
        caller arriving during one waits for it instead of embedding the same texts again."""
        with self._embedding:
            done, head = self.view.projections.checkpoints()["embeddings"], self.log.last_seq()
            if done >= head:
                return
            texts = [_text_to_embed(event.payload) for event in self.log.read_events(done, head)]
            texts = [text for text in texts if text is not None]
            if texts:
                with self.reading() as db:
                    texts = self.view.embeddings.uncached(db, texts)
            self.view.embeddings.prime(texts)
            # Only as far as what was primed: later events have a catch-up of their own queued.
            self.catch_up(to_seq=head)

    def rebuild(self, to_seq: int | None = None, progress: Callable[[int], None] | None = None) -> int:
        with self.lock.local:
            return self.view.projections.rebuild(self.log, to_seq, progress)

    def append(self, drafts: Sequence[EventDraft], redact_seqs: Sequence[int] = (), *,
               embed_now: bool = False) -> list[StoredEvent]:
        """Append, then bring the projections up to date before answering (read your writes):
        all of them, or all but the embeddings when there is text to embed and a background to
        embed it in (`embed_now` forces the first, as erasure needs)."""
        with self.lock:
            defer = self._background is not None and not embed_now and (
                self.embeddings_behind or any(_text_to_embed(d.payload) is not None for d in drafts))
            events = self.log.append_events(drafts, redact_seqs=redact_seqs)
            try:
                self.catch_up(skip=_EMBEDDINGS if defer else frozenset())
            except StorageError as exc:
                # The event is in the log (durable, whole) but not yet in the projections: the
                # next call catches up, and a retry with the same event id stores nothing twice.
                raise StorageError(
                    f"recorded as seq {events[-1].seq}, but the indexes could not be updated ({exc.__cause__}); "
                    "it shows once the disk has room, and a retry with the same event_id is safe") from exc.__cause__
        if defer:
            try:
                self._background.submit(self.catch_up_embeddings).add_done_callback(self._report)
            except RuntimeError:  # the pool is shutting down (the service is closing): embed here
                self.catch_up_embeddings()
        return events

    def _report(self, done: Future) -> None:
        # Nobody waits on the background catch-up; the next read retries it and gets the error.
        if done.exception() is not None:
            logger.error("embedding new memories failed for %s", self.owner.key[:12], exc_info=done.exception())

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection to the projections in a read transaction of its own, without the lock.

        WAL gives it the last committed state, so ranking a query (the costly part of a read)
        runs beside this user's writes and other reads instead of queueing behind them.
        """
        try:
            db = self._readers.get_nowait()
        except queue.Empty:
            db = sqlite3.connect(f"file:{self._projection_path}?mode=ro", uri=True, isolation_level=None,
                                 check_same_thread=False, timeout=30)
        reusable = False
        try:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")
                reusable = True
        finally:
            if reusable and self._readers.qsize() < _IDLE_READERS:
                self._readers.put(db)
            else:
                db.close()

    def view_as_of(self, seq: int) -> ProjectionView:
        """The projections as they were after `seq`, rebuilt in memory from the log."""
        with self.lock.local:
            view = build_projections(open_projection_db(":memory:"), self.embedder,
                                     cache_db=self._cache_db or self.view.db)
            view.projections.catch_up(self.log, to_seq=seq)
            return view

    def close(self) -> None:
        with self.lock.local:
            while not self._readers.empty():
                self._readers.get_nowait().close()
            self.view.db.close()
            if self._cache_db is not None:
                self._cache_db.close()
            self.log.close()
        self.lock.close()


def list_logs(data_dir: str | Path) -> Iterator[tuple[Path, Identity]]:
    """Every user folder with a log, and its owner as the log itself records it."""
    for path in sorted((Path(data_dir) / "users").glob("*/events.sqlite")):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM log_meta"))
        finally:
            db.close()
        yield path.parent, Identity(meta["owner_iss"], meta["owner_sub"])


class UserDirectory:
    """Opens each user's store once and keeps it; finds every log on disk."""

    def __init__(self, data_dir: str | Path, keys: KeyRing, embedder: Embedder, background: Executor | None = None,
                 replica: int | None = None):
        self.data_dir = Path(data_dir)
        self.keys = keys
        self.embedder = embedder
        self._background = background
        self._replica = replica
        self._stores: dict[str, UserStore] = {}
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}

    def get(self, owner: Identity) -> UserStore:
        store = self._stores.get(owner.key)
        if store is not None:
            return store
        with self._lock:
            opening = self._opening.setdefault(owner.key, threading.Lock())
        # Opening may replay a long log: hold only this user's lock while it does.
        with opening:
            store = self._stores.get(owner.key)
            if store is None:
                store = UserStore(self.data_dir, owner, self.keys, self.embedder, self._background, self._replica)
                self._stores[owner.key] = store
        return store

    def open_stores(self) -> list[UserStore]:
        """The stores this process has open (for metrics: no log is opened to answer)."""
        return list(self._stores.values())

    def follow_open(self) -> int:
        """Bring every open store up to its log's head (events other processes appended); how
        many events. A store that fails is logged and retried at the next call."""
        applied = 0
        for store in self.open_stores():
            try:
                applied += store.follow()
                store.settle()
            except Exception:  # noqa: BLE001 - one person's damaged log must not stop the others'
                logger.exception("could not follow the log of %s", store.owner.key[:12])
        return applied

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
