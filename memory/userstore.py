"""One user's log and projections kept in step, and the directory of all users' stores.

Each user has a folder `<data_dir>/users/<hash of identity>/` holding `projections.sqlite`
(derived; deleted or corrupted, it is rebuilt on open) and, on the SQLite backend, `events.sqlite`
(the log, the truth). On PostgreSQL the log is in the database and the folder is this process's
cache of it, caught up by seq.
Every user has a lock of their own, so one user's writes never hold up another user's reads.

Several processes may serve one data directory (`memory serve --workers N`). Each keeps
projections of its own (`projections.worker<k>.sqlite`; the first worker the plain name): a cache
is only ever written by the process that reads it, so its in-memory state (the vector index, the
checkpoints) never goes stale behind its back. What another process appended is caught up by
seq: `UserStore.follow` before every call, and for an erasure made elsewhere, as soon as the log
directory tells of it (PostgreSQL's NOTIFY) or a poll of the open logs finds it
(memory/following.py). Both use only `last_seq` and `read_events` of the `EventStore`, so
replicas over one PostgreSQL database follow each other the same way.
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
from memory.log import EventDraft, EventStore, StoredEvent, user_folder
from memory.log import USERS_DIR
from memory.logs import LogDirectory, sqlite_logs
from memory.userlock import CrossLock, UserLock
from projections.base import PROJECTIONS_FILE, ProjectionSet, open_projection_db, passes_quick_check
from projections.duplicates import TextKeysProjection
from projections.embedder import Embedder
from projections.embedding_cache import EmbeddingCache, SqliteEmbeddingCache
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
    return PROJECTIONS_FILE if replica == 0 else f"projections.worker{replica}.sqlite"


def remove_replicas(data_dir: str | Path, keep: int) -> int:
    """Delete the projection files of workers `keep` and above: a cache no process follows any
    more would keep the text of memories forgotten after it stopped. Run before workers start."""
    removed = 0
    for path in (Path(data_dir) / USERS_DIR).glob("*/projections.worker*.sqlite*"):
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
    db: sqlite3.Connection, embedder: Embedder, cache_db: sqlite3.Connection | None = None,
    cache: EmbeddingCache | None = None,
) -> ProjectionView:
    """`cache` keeps the vectors (a shared one: PostgreSQL); else `cache_db`'s table (another
    projections file's); else `db`'s own."""
    if cache is None and cache_db is not None:
        cache = SqliteEmbeddingCache(cache_db)
    embeddings = EmbeddingsProjection(embedder, cache)
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

    def __init__(self, data_dir: Path, log: EventStore, embedder: Embedder, background: Executor | None = None,
                 embedding_cache: EmbeddingCache | None = None, replica: int | None = None,
                 across: CrossLock | None = None):
        """Takes over `log` (closes it on close, and when opening fails). `embedding_cache`: where
        this person's vectors are kept when not in their projections file (PostgreSQL, shared by
        replicas). `replica`: None when this process alone serves `data_dir`; else which of several
        worker processes this is (`follow`). `across`: the person's lock across processes that
        append to the same log (memory/userlock.py), taken over like `log`."""
        self.owner = log.owner
        self._embedding_cache = embedding_cache
        self.embedder = embedder
        self._background = background
        self._embedding = threading.Lock()
        self.log = log
        self.lock = UserLock(across)
        try:
            self.log.check_chain()
        except BaseException:
            self.log.close()
            self.lock.close()
            raise
        folder = user_folder(data_dir, self.owner)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._projection_path = folder / projection_file(replica or 0)
        # Workers after the first share its vector cache: a text one worker embedded is not
        # embedded again by the others as they follow the log, nor when one starts cold.
        self._cache_db: sqlite3.Connection | None = None
        if replica and embedding_cache is None:
            self._cache_db = open_projection_db(folder / projection_file(0))
            create_cache(self._cache_db)  # the first worker may not have opened this person yet
            self._embedding_cache = SqliteEmbeddingCache(self._cache_db)
        # Set when `follow` applied an erasure made by another process (`erase_leftovers`).
        self._wal_dirty = False
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
            if not passes_quick_check(db):
                raise sqlite3.DatabaseError("quick_check failed")
            return build_projections(db, self.embedder, cache=self._embedding_cache)
        except sqlite3.DatabaseError:
            # Derived data only: set the damaged file aside and rebuild from the log.
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self._projection_path}{suffix}").unlink(missing_ok=True)
            return build_projections(open_projection_db(self._projection_path), self.embedder,
                                     cache=self._embedding_cache)

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

    def _projected_head(self) -> int:
        # How far the other projections got: every append catches them up to the log's head, so
        # this is the head as this process knows it, without asking the log (on PostgreSQL a
        # round trip, twice on every read). Catching up with other processes' appends is
        # `catch_up`'s job.
        return max(self.view.projections.checkpoints().values(), default=0)

    @property
    def applied_seq(self) -> int:
        """The last seq of the log this process's projections have applied (no round trip)."""
        return self._projected_head()

    def follow(self, head: int | None = None) -> bool:
        """Apply what other servers appended to this log since this one last looked (replicas over
        one PostgreSQL database): read your writes across them. One look at the log's head when
        nothing is new, none when the caller knows it (`head`: the person's lock read it as it was
        granted); the embeddings follow as after an append of this process. True when an erasure
        was among the events applied (its leftovers: `erase_leftovers`)."""
        if (self.log.last_seq() if head is None else head) <= self._projected_head():
            return False
        with self.lock.local:
            done, head = self._projected_head(), self.log.last_seq() if head is None else head
            if head <= done:
                return False
            erased = any(event.type == "memory.forgotten" for event in self.log.read_events(done, head))
            self.catch_up(skip=_EMBEDDINGS)
        if erased:
            self._wal_dirty = True
        return erased

    def erase_leftovers(self) -> bool:
        """After following an erasure made elsewhere: bring the embeddings up and empty the
        projections' WAL, so no old page holds the forgotten text. On a connection of its own and
        outside the locks, giving up at once when a reader is in the way (a checkpoint waits for
        every reader, and a reader may be waiting for this person's lock); False: try again later."""
        if not self._wal_dirty:
            return True
        self.catch_up_embeddings()
        db = sqlite3.connect(self._projection_path, timeout=0.2)
        try:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            busy = 1
        finally:
            db.close()
        self._wal_dirty = busy != 0
        return not self._wal_dirty

    @property
    def embeddings_behind(self) -> bool:
        return self.view.projections.checkpoints()["embeddings"] < self._projected_head()

    def catch_up_embeddings(self) -> None:
        """Bring the embeddings up to the log's head: the texts are embedded outside the lock,
        then applied inside it with their vectors ready. One catch-up per user at a time; a
        caller arriving during one waits for it instead of embedding the same texts again."""
        with self._embedding:
            done, head = self.view.projections.checkpoints()["embeddings"], self._projected_head()
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
            view = build_projections(open_projection_db(":memory:"), self.embedder, cache_db=self.view.db,
                                     cache=self.view.embeddings.cache)
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


#: Kept for callers of the SQLite layout; `LogDirectory.list_logs` is the backend-neutral one.
list_logs = sqlite_logs


class UserDirectory:
    """Opens each user's store once and keeps it: the log from `logs`, projections under `data_dir`."""

    def __init__(self, data_dir: str | Path, logs: LogDirectory, embedder: Embedder,
                 background: Executor | None = None,
                 embedding_caches: Callable[[str], EmbeddingCache] | None = None, replica: int | None = None):
        """`embedding_caches`: a person's key -> their embedding cache, when it is not kept in
        their projections file (PostgreSQL: `projections.pg_embedding_cache`). `replica`: which
        of several worker processes on `data_dir` this is (None when alone)."""
        self.data_dir = Path(data_dir)
        self._embedding_caches = embedding_caches
        self.logs = logs
        self.keys = logs.keys
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
                cache = None if self._embedding_caches is None else self._embedding_caches(owner.key)
                across = self.logs.writer_lock(owner, processes=self._replica is not None)
                store = UserStore(self.data_dir, self.logs.open(owner), self.embedder, self._background, cache,
                                  self._replica, across)
                self._stores[owner.key] = store
        return store

    def opened(self, key: str) -> UserStore | None:
        """The store of the person whose key this is, when this process has it open; never opens one."""
        return self._stores.get(key)

    def open_stores(self) -> list[UserStore]:
        """The stores this process has open (for metrics: no log is opened to answer)."""
        return list(self._stores.values())

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
