"""The service layer: every operation the tools expose, for one caller at a time.

Adapters (MCP tools, REST handlers, the CLI) call these methods and nothing below them. Every
method appends its event — reads included, so a person can see who read what — and answers from
projections that are caught up to that event.
"""

import os
import sqlite3
from itertools import chain
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np

from memory.audit import export_user, verify_user
from memory.commands import MemoryFilter, RetrieveQuery, SessionItem, StoreMemory, SyncSession, UpdateMemory
from memory.erasure import ErasedText, texts_of
from memory.errors import InvalidInput, NotFound
from memory.events import (
    EntityRegistered,
    EventPayload,
    MemoriesLinked,
    MemoriesRead,
    MemoryDeduplicated,
    MemoryDeleted,
    MemoryRestored,
    MemoryForgotten,
    MemoryStored,
    MemoryUpdated,
    ProjectSet,
)
from memory.following import LogFollower
from memory.hygiene import MAX_SIMILAR, check_store, import_duplicate, superseding
from memory.importing import imported_memory_id, import_source, parse_import
from memory.ids import is_uuid, new_uuid7
from memory.identity import Actor, Identity
from memory.log import EventDraft
from memory.logs import LogDirectory, SqliteLogDirectory
from memory.model import Entity, Link, LinkType, Memory, MemoryFields, MemoryType, Scope, Status, initial_status
from memory.results import (
    ChainStatus,
    ContextInfo,
    EntityPage,
    ForgetResult,
    HistoryEntry,
    HistoryPage,
    ImportDuplicate,
    ImportReport,
    MemoryPage,
    ProjectSummary,
    RetrievalResult,
    RetrievedMemory,
    SearchHit,
    SimilarMemory,
    StoreResult,
    SyncResult,
    TimelinePage,
    title_of,
)
from memory.signing import KeyRing
from memory.userstore import ProjectionView, UserDirectory, UserStore
from memory.validation import (
    check_limit,
    check_scope,
    checked,
    clean_entity,
    clean_tags,
    clean_text,
    clean_timestamp,
    cleaned,
)
from projections import entities as entity_reads
from projections import memories as memory_reads
from projections.embedder import Embedder
from projections.embedding_cache import EmbeddingCache
from projections.links import linked_ids
from projections.query_vectors import QueryVectorCache
from projections.ranking import rank_memories
from projections.vectors import VectorIndex

__all__ = ["Caller", "MemoryService"]

_MAX_RELATED = 5
_MAX_SEQ = 2**63 - 1  # SQLite's largest integer: a cursor beyond it is no seq at all
_QUERY_IN_HISTORY = 200
# What erasure redacts: the memory's own events (they carry its text), and every read that
# shares its text (memory/erasure.py says what "shares" means).
_OWN_EVENTS = ("memory.stored", "memory.updated", "memory.deleted")


def _seq_cursor(cursor: int | None, least: int) -> None:
    if cursor is not None and not least <= cursor <= _MAX_SEQ:
        raise InvalidInput(f"cursor must be a seq between {least} and {_MAX_SEQ}")


class Caller(msgspec.Struct, frozen=True):
    """Who is calling: the identity owning the log, and the client and request it came through."""

    identity: Identity
    client_id: str | None = None
    request_id: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.identity.sub, self.client_id)


def _memory_fields(shape: msgspec.Struct) -> dict:
    """The fields of a memory that a store, a session item or an imported record carries."""
    return {f: getattr(shape, f) for f in MemoryFields.__struct_fields__ if hasattr(shape, f)}


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryService:
    def __init__(self, data_dir: str | Path, embedder: Embedder, keys: KeyRing | None = None,
                 logs: LogDirectory | None = None,
                 embedding_caches: Callable[[str], EmbeddingCache] | None = None, *, replica: int | None = None):
        """`logs`: where the logs of record are (default: SQLite files under `data_dir`); the
        service closes it. `embedding_caches`: each person's vector cache elsewhere than their
        projections file (PostgreSQL, shared by replicas). Projections are kept under `data_dir`
        whatever the backend. `replica`: which of several worker processes serving `data_dir` this
        is (None when alone); each keeps projection files of its own (memory/userstore.py)."""
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.keys = keys or (logs.keys if logs is not None else KeyRing(self.data_dir))
        self.logs = logs or SqliteLogDirectory(self.data_dir, self.keys)
        self.embedder = embedder
        # New memories are embedded here after their store has been answered (UserStore.append).
        self._embed_later = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="embed-later")
        self.users = UserDirectory(self.data_dir, self.logs, embedder, self._embed_later, embedding_caches, replica)
        self._replica = replica
        # user key -> (seq, entry hash, events) of the last event verify_chain found sound.
        self._verified_chains: dict[str, tuple[int, str, int]] = {}
        self._query_embeddings = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                                    thread_name_prefix="embed-query")
        # A query asked again skips the model; erasure empties the person's entries (forget).
        self.query_vectors = QueryVectorCache(embedder)
        self._following: LogFollower | None = None

    def follow_others(self, poll_seconds: float = 5.0) -> None:
        """For replicas over one PostgreSQL database, or worker processes on one data directory:
        before every call, apply what the others appended to that person's log (read your writes
        across them), and apply their appends to every log this server has open as they are told
        (PostgreSQL's NOTIFY), so an erasure made elsewhere leaves this server's files (and its
        query cache) at once. Besides, every `poll_seconds` a look at every open log; without
        notices (SQLite, or while the listener reconnects) every 0.5 s (memory/following.py)."""
        if self._following is None:
            self._following = LogFollower(self.users, self.logs, self._follow, poll_seconds)

    @property
    def following(self) -> LogFollower | None:
        return self._following

    def _follow(self, store: UserStore) -> None:
        if store.follow():
            self.query_vectors.forget_owner(store.owner.key)

    def close(self) -> None:
        if self._following is not None:
            self._following.close()
            self._following = None
        self._query_embeddings.shutdown(wait=True, cancel_futures=True)
        # What is still queued is embedded now; anything left is caught up at the next start.
        self._embed_later.shutdown(wait=True)
        self.users.close()
        self.logs.close()

    # -- plumbing -------------------------------------------------------------------------

    def _store(self, caller: Caller) -> UserStore:
        store = self.users.get(caller.identity)
        if self._following is not None or self._replica is not None:
            self._follow(store)  # other processes may have appended since: one look at the head
        return store

    def _append(self, caller: Caller, payloads: list[EventPayload], *, redact_seqs: list[int] | None = None,
                embed_now: bool = False):
        # A memory's id is the id of the event that stored it: retries of a store are idempotent,
        # and the log alone says which memory ids belong to whom (isolation-check relies on it).
        drafts = [
            EventDraft(event_id=p.memory_id if isinstance(p, MemoryStored) else new_uuid7(), payload=p,
                       actor=caller.actor, request_id=caller.request_id)
            for p in payloads
        ]
        return self._store(caller).append(drafts, redact_seqs or (), embed_now=embed_now)

    def _audit_read(self, caller: Caller, operation: str, query: str | None, returned: list[str],
                    filters: dict | None = None) -> int:
        event = self._append(caller, [MemoriesRead(operation=operation, query=query,
                                                   filters=filters or {}, returned_ids=returned)])
        return event[0].seq

    def _existing(self, store: UserStore, memory_id: str, *, allow_deleted: bool = False) -> Memory:
        # An id of another user is simply not in this user's projections: "not found", as for any id.
        memory = memory_reads.load_memory(store.view.db, memory_id) if isinstance(memory_id, str) else None
        if memory is None or (memory.deleted and not allow_deleted):
            raise NotFound(f"no memory with id {memory_id!r}")
        return memory

    def _active_project(self, store: UserStore, caller: Caller) -> str | None:
        return memory_reads.active_project(store.view.db, caller.client_id)

    # -- writes ---------------------------------------------------------------------------

    def store(self, caller: Caller, cmd: StoreMemory) -> Memory:
        return self.store_memory(caller, cmd).memory

    def store_memory(self, caller: Caller, cmd: StoreMemory) -> StoreResult:
        """Store, unless a live memory of the same entity, scope and project already says the same
        (then that one is the answer, `duplicate_of` names it, and a `memory.deduplicated` event
        records the attempt); `allow_duplicate` stores anyway. Either way the answer lists the
        live memories closest to the text (`similar`).

        The text is embedded before the append, outside the lock (the near-duplicate check needs
        its vector, ~5 ms), and that vector is the one the embeddings projection keeps: the model
        runs once per store, as before, only now before the answer instead of after it."""
        cmd = cleaned(checked(cmd))
        store = self._store(caller)
        with store.lock:
            payload = self._stored_payload(store, caller, cmd)
            retry = cmd.event_id is not None and memory_reads.load_memory(store.view.db, cmd.event_id) is not None
        with store.reading() as db:
            vector = store.view.embeddings.vector_for(db, payload.text)
        store.catch_up_embeddings()  # the memories stored just before are candidates too
        with store.lock:
            superseded = [self._existing(store, old).id for old in cmd.supersedes]
            if payload.memory_id in superseded:
                raise InvalidInput("a memory cannot supersede itself")
            check = check_store(store.view.db, store.view.embeddings.index, payload, vector,
                                exclude=frozenset(superseded) | {payload.memory_id})
            if retry:
                # The same event id again: the log checks it is the same store and appends nothing.
                self._append(caller, [payload])
                return StoreResult(memory=self._existing(store, payload.memory_id), similar=check.similar)
            if check.duplicate is not None and not cmd.allow_duplicate:
                skipped = MemoryDeduplicated(memory_id=check.duplicate.id, match=check.match or "exact",
                                             score=check.score)
                store.append([EventDraft(event_id=cmd.event_id or new_uuid7(), payload=skipped,
                                         actor=caller.actor, request_id=caller.request_id)])
                return StoreResult(memory=check.duplicate, duplicate_of=check.duplicate.id,
                                   similar=check.similar)
            similar = check.similar
            if check.duplicate is not None:  # allowed: the memory it repeats is the closest one
                similar = [SimilarMemory(id=check.duplicate.id, text=check.duplicate.text,
                                         score=check.score), *similar][:MAX_SIMILAR]
            self._append(caller, [payload, *superseding(payload.memory_id, superseded)], embed_now=True)
            return StoreResult(memory=self._existing(store, payload.memory_id), similar=similar)

    def _stored_payload(self, store: UserStore, caller: Caller, cmd: StoreMemory) -> MemoryStored:
        if cmd.event_id is not None and not is_uuid(cmd.event_id):
            raise InvalidInput("event_id must be a UUID (it is the idempotency key and the new memory's id)")
        fields = _memory_fields(cmd)  # checked and normalised by the caller (store_memory)
        if fields["project"] is None and cmd.scope in (Scope.PROJECT, Scope.TASK):
            fields["project"] = self._active_project(store, caller)
        check_scope(cmd.scope, fields["project"], cmd.task_id)
        fields["status"] = initial_status(cmd.memory_type, cmd.status)
        return MemoryStored(memory_id=cmd.event_id or new_uuid7(), **fields)

    def update(self, caller: Caller, memory_id: str, changes: UpdateMemory) -> Memory:
        changes = cleaned(checked(changes))
        store = self._store(caller)
        with store.lock:
            current = self._existing(store, memory_id)
            fields = {f: getattr(changes, f) for f in changes.__struct_fields__ if getattr(changes, f) is not msgspec.UNSET}
            superseded = [self._existing(store, old).id for old in fields.pop("supersedes", [])]
            if memory_id in superseded:
                raise InvalidInput("a memory cannot supersede itself")
            fields = {k: v for k, v in fields.items() if getattr(current, k) != v}
            if not fields and not superseded:
                raise InvalidInput("nothing to change: give at least one field with a new value")
            changed: list[EventPayload] = [MemoryUpdated(memory_id=memory_id, **fields)] if fields else []
            self._append(caller, changed + superseding(memory_id, superseded))
            return self._existing(store, memory_id)

    def delete(self, caller: Caller, memory_id: str, reason: str | None = None) -> Memory:
        store = self._store(caller)
        with store.lock:
            self._existing(store, memory_id)
            self._append(caller, [MemoryDeleted(memory_id=memory_id, reason=reason)])
            return self._existing(store, memory_id, allow_deleted=True)

    def restore(self, caller: Caller, memory_id: str) -> Memory:
        """Undo a soft delete: the memory is live again (an event; its history shows both)."""
        store = self._store(caller)
        with store.lock:
            if not self._existing(store, memory_id, allow_deleted=True).deleted:
                raise InvalidInput(f"memory {memory_id!r} is not deleted")
            self._append(caller, [MemoryRestored(memory_id=memory_id)])
            return self._existing(store, memory_id)

    def forget(self, caller: Caller, memory_id: str) -> ForgetResult:
        """Erasure: a tombstone, the memory's payloads redacted, its text gone from every projection."""
        store = self._store(caller)
        # Every projection is brought to the tombstone before answering (the checkpoint below
        # must find no vector of the text); what was still to embed is embedded first, unlocked.
        store.catch_up_embeddings()
        with store.lock:
            self._existing(store, memory_id, allow_deleted=True)
            own = [s for s, t in memory_reads.memory_event_seqs(store.view.db, memory_id, 0, _MAX_SEQ) if t in _OWN_EVENTS]
            erased = ErasedText.of(
                (text for seq in own for text in texts_of(store.log.get_event(seq).payload)),
                chain(memory_reads.texts_besides(store.view.db, memory_id),
                      entity_reads.registered_texts(store.view.db)))
            sharing = [event.seq for event in store.log.read_events()
                       if isinstance(event.payload, MemoriesRead) and erased.shared_by(event.payload)]
            seqs = sorted({*own, *sharing})
            events = self._append(caller, [MemoryForgotten(memory_id=memory_id, redacted_seqs=seqs)], redact_seqs=seqs,
                                  embed_now=True)
            # Leave no copy of the old pages in the projection's WAL, nor a query that quoted the
            # text in the query-vector cache.
            store.view.projections.truncate_wal()
            self.query_vectors.forget_owner(caller.identity.key)
            return ForgetResult(memory_id=memory_id, tombstone_seq=events[0].seq, redacted_seqs=seqs)

    def link(self, caller: Caller, source_id: str, target_id: str, link_type: LinkType) -> Link:
        store = self._store(caller)
        with store.lock:
            if source_id == target_id:
                raise InvalidInput("a memory cannot be linked to itself")
            self._existing(store, source_id)
            self._existing(store, target_id)
            self._append(caller, [MemoriesLinked(source_id=source_id, target_id=target_id, link_type=link_type)])
            return Link(source_id, target_id, link_type)

    def register_entity(self, caller: Caller, name: str, description: str | None = None,
                        parent: str | None = None) -> Entity:
        name = clean_entity(name, "name")
        parent = clean_entity(parent, "parent")
        if parent == name:
            raise InvalidInput("an entity cannot be its own parent")
        if description is not None:
            description = clean_text(description, "description")
        store = self._store(caller)
        with store.lock:
            self._append(caller, [EntityRegistered(name=name, description=description, parent=parent)])
            entities, _ = entity_reads.entity_page(store.view.db, name, None, 1)
            return entities[0]

    def set_project(self, caller: Caller, project: str) -> ProjectSummary:
        project = clean_entity(project, "project")
        store = self._store(caller)
        with store.lock:
            if not (entity_reads.is_root_entity(store.view.db, project)
                    or memory_reads.has_live_memory_in(store.view.db, project)):
                known = ", ".join(memory_reads.known_projects(store.view.db, 20)
                                  + entity_reads.entity_roots(store.view.db, 20))
                raise NotFound(
                    f"no project {project!r}: register it as an entity or store a memory in it first"
                    + (f" (known: {known})" if known else "")
                )
            self._append(caller, [ProjectSet(project=project, client_id=caller.client_id)])
            return self._project_summary(store.view, project)

    def sync_session(self, caller: Caller, session: SyncSession) -> SyncResult:
        """A session's outcome in one atomic append: decisions and learnings are added, status
        updates and feedback replace the previous one for the same entity, and `supersedes`
        links the new memory to the old and marks the old one superseded."""
        session = checked(session)
        store = self._store(caller)
        with store.lock:
            project = clean_entity(session.project, "project") or self._active_project(store, caller)
            scope = Scope.PROJECT if project else Scope.GLOBAL
            payloads: list[EventPayload] = []
            result = SyncResult()
            kinds = (
                (session.decisions, MemoryType.PROJECT_CONTEXT, "decision", False),
                (session.learnings, MemoryType.EPISODIC, "learning", False),
                (session.status_updates, MemoryType.PROJECT_CONTEXT, "status", True),
                (session.feedback, MemoryType.TASK_INSTRUCTION, "feedback", True),
            )
            for items, memory_type, tag, upsert in kinds:
                for item in items:
                    payloads += self._session_item(store, item, memory_type, tag, upsert, project, scope,
                                                   session.task_id, result)
            if not payloads:
                raise InvalidInput("nothing to sync: give decisions, learnings, status_updates or feedback")
            self._append(caller, payloads)
            return result

    def _session_item(self, store: UserStore, item: SessionItem, memory_type: MemoryType, tag: str,
                      upsert: bool, project: str | None, scope: Scope, task_id: str | None,
                      result: SyncResult) -> list[EventPayload]:
        item = cleaned(msgspec.structs.replace(item, tags=[tag, *item.tags]))
        entity, text, tags = item.entity, item.text, item.tags
        if upsert and entity is None:
            raise InvalidInput(f"each {tag} item needs an entity (it replaces the last {tag} of that entity)")
        status = initial_status(memory_type, item.status)
        previous = self._previous_item(store, tag, entity, project) if upsert else None
        if previous is not None:
            result.updated.append(previous)
            payloads: list[EventPayload] = [MemoryUpdated(memory_id=previous, text=text, tags=tags, status=status)]
            new_id = previous
        else:
            new_id = new_uuid7()
            result.created.append(new_id)
            payloads = [MemoryStored(memory_id=new_id, text=text, memory_type=memory_type, scope=scope,
                                     entity=entity, project=project, task_id=task_id, tags=tags, status=status)]
        if item.supersedes:
            self._existing(store, item.supersedes)
            if item.supersedes == new_id:
                raise InvalidInput("a memory cannot supersede itself")
            payloads += [
                MemoriesLinked(source_id=new_id, target_id=item.supersedes, link_type=LinkType.SUPERSEDES),
                MemoryUpdated(memory_id=item.supersedes, status=Status.SUPERSEDED),
            ]
            result.superseded.append(item.supersedes)
        return payloads

    @staticmethod
    def _previous_item(store: UserStore, tag: str, entity: str | None, project: str | None) -> str | None:
        return memory_reads.latest_tagged(store.view.db, tag, entity, project)

    # -- reads ----------------------------------------------------------------------------

    def retrieve_context(self, caller: Caller, q: RetrieveQuery) -> RetrievalResult:
        q = checked(q)
        store = self._store(caller)
        query = q.query.strip()
        if len(query.encode()) > 4096:
            raise InvalidInput("query is longer than 4096 bytes")
        # The only model call on the read path: started now, waited for once the lexical half of
        # the ranking has run beside it.
        embedding = self._query_embeddings.submit(self.query_vectors.vector, caller.identity.key, query) \
            if query else None

        def embedded_and_caught_up() -> np.ndarray:
            # Read your writes: the vectors of memories stored just before are in the index before
            # the dense half runs (the lexical half needs only the full-text index, which every
            # store updates before it is answered).
            store.catch_up_embeddings()
            return embedding.result()

        if q.as_of is None:
            # Ranking reads a snapshot of its own: it does not wait for this user's writes.
            with store.reading() as db:
                project = clean_entity(q.project, "project") or memory_reads.active_project(db, caller.client_id)
                filters, results = self._rank(db, store.view.embeddings.index, project, q, query,
                                              embedded_and_caught_up if embedding else None)
            as_of = None
        else:
            with store.lock:
                as_of = self._as_of_seq(store, q.as_of)
                view = store.view_as_of(as_of)
                # The project the caller works in now, applied to the past.
                project = clean_entity(q.project, "project") or self._active_project(store, caller)
                filters, results = self._rank(view.db, view.embeddings.index, project, q, query,
                                              embedding.result if embedding else None)
        returned = [r.memory.id for r in results] + [m.id for r in results for m in r.related]
        with store.lock:
            self._audit_read(caller, "retrieve_context", query, list(dict.fromkeys(returned)),
                             msgspec.to_builtins(filters) | {"as_of": as_of})
        return RetrievalResult(query=query, memories=results, as_of_seq=as_of, project=project)

    @staticmethod
    def _rank(db: sqlite3.Connection, index: VectorIndex, project: str | None, q: RetrieveQuery, query: str,
              vector: Callable[[], np.ndarray] | None) -> tuple[MemoryFilter, list[RetrievedMemory]]:
        filters = cleaned(msgspec.structs.replace(q.filter, project=project, tags=q.tags or None))
        ranked = rank_memories(db, index, query, vector, filters, q.limit, q.recency_weight, _now(),
                               floor=q.min_score)
        memories = memory_reads.load_memories(db, [r.memory_id for r in ranked])
        results = []
        for r in ranked:
            # The vector index is published just after each commit: it may name a memory this
            # snapshot does not have yet.
            if r.memory_id not in memories:
                continue
            related: list[Memory] = []
            if q.include_related:
                ids = linked_ids(db, r.memory_id, _MAX_RELATED)
                related = [m for m in memory_reads.load_memories(db, ids).values() if not m.deleted]
            results.append(RetrievedMemory(memory=memories[r.memory_id], score=r.score, related=related))
        return filters, results

    def _as_of_seq(self, store: UserStore, as_of: int | str | None) -> int | None:
        if as_of is None:
            return None
        if isinstance(as_of, int):
            if as_of < 0:
                raise InvalidInput("as_of must be a seq ≥ 0 or an RFC 3339 time")
            return min(as_of, store.log.last_seq())
        stamp = clean_timestamp(as_of, "as_of")
        return store.log.seq_at_time(stamp)

    def search(self, caller: Caller, query: str, limit: int = 10, min_score: float | None = None) -> list[SearchHit]:
        """The ChatGPT `search` contract: ids and titles to `fetch` later."""
        check_limit(limit)
        result = self.retrieve_context(caller, RetrieveQuery(query=query, limit=limit, recency_weight=0.1,
                                                              min_score=min_score))
        return [
            SearchHit(id=r.memory.id, title=title_of(r.memory.text), snippet=r.memory.text[:300], score=r.score)
            for r in result.memories
        ]

    def get(self, caller: Caller, memory_id: str) -> Memory:
        store = self._store(caller)
        with store.lock:
            memory = self._existing(store, memory_id, allow_deleted=True)
            self._audit_read(caller, "fetch", None, [memory_id])
            return memory

    def history(self, caller: Caller, memory_id: str, cursor: int = 0, limit: int = 20) -> HistoryPage:
        check_limit(limit)
        _seq_cursor(cursor, 0)
        store = self._store(caller)
        with store.lock:
            rows = memory_reads.memory_event_seqs(store.view.db, memory_id, cursor, limit + 1)
            if not rows and cursor == 0:
                raise NotFound(f"no memory with id {memory_id!r}")
            more = len(rows) > limit
            entries = [self._history_entry(store, seq) for seq, _ in rows[:limit]]
            self._audit_read(caller, "history", memory_id, [])
            return HistoryPage(memory_id=memory_id, entries=entries,
                               next_cursor=rows[limit - 1][0] if more else None)

    @staticmethod
    def _history_entry(store: UserStore, seq: int) -> HistoryEntry:
        event = store.log.get_event(seq)
        assert event is not None
        payload = msgspec.to_builtins(event.payload) if event.payload is not None else None
        if payload:
            payload.pop("salt", None)  # only there to make the payload's hash unguessable
        if payload and isinstance(payload.get("query"), str):
            payload["query"] = payload["query"][:_QUERY_IN_HISTORY]
        if payload and "returned_ids" in payload:
            payload["returned_count"] = len(payload.pop("returned_ids"))
        return HistoryEntry(seq=event.seq, type=event.type, recorded_at=event.recorded_at, actor=event.actor.sub,
                            client_id=event.actor.client_id, request_id=event.request_id,
                            redacted=event.redacted, payload=payload)

    def list_entities(self, caller: Caller, prefix: str | None = None, cursor: str | None = None,
                      limit: int = 50) -> EntityPage:
        check_limit(limit)
        prefix = clean_entity(prefix, "prefix")
        store = self._store(caller)
        with store.lock:
            entities, next_cursor = entity_reads.entity_page(store.view.db, prefix, cursor, limit)
            self._audit_read(caller, "list_entities", prefix, [])
            return EntityPage(entities=entities, next_cursor=next_cursor)

    def search_entities(self, caller: Caller, query: str, limit: int = 10) -> list[Entity]:
        check_limit(limit)
        if not query.strip():
            raise InvalidInput("query must not be empty")
        store = self._store(caller)
        with store.lock:
            found = entity_reads.find_entities(store.view.db, query[:200], limit)
            self._audit_read(caller, "search_entities", query[:200], [])
            return found

    def project_summary(self, caller: Caller, project: str) -> ProjectSummary:
        store = self._store(caller)
        with store.lock:
            summary = self._project_summary(store.view, clean_entity(project, "project"))
            self._audit_read(caller, "project_summary", project, [])
            return summary

    @staticmethod
    def _project_summary(view: ProjectionView, project: str) -> ProjectSummary:
        db = view.db
        return ProjectSummary(
            project=project,
            counts_by_type=memory_reads.counts_by(db, "memory_type", project),
            counts_by_status=memory_reads.counts_by(db, "status", project),
            recent_decisions=memory_reads.recent_decisions(db, project, 5),
            open_tasks=memory_reads.open_tasks(db, project, 10),
        )

    def export(self, caller: Caller, output: str | Path) -> dict:
        """The caller's log as a signed bundle. The export is a read like any other: its event is
        appended first, so the bundle shows that it was taken."""
        store = self._store(caller)
        with store.lock:
            self._audit_read(caller, "export", None, [])
            return export_user(self.data_dir, caller.identity, self.keys, output, logs=self.logs)

    def context_info(self, caller: Caller) -> ContextInfo:
        store = self._store(caller)
        with store.lock:
            db = store.view.db
            counts = memory_reads.counts_by(db, "memory_type")
            self._audit_read(caller, "get_context_info", None, [])
            return ContextInfo(
                user=str(caller.identity), active_project=self._active_project(store, caller),
                counts_by_type=counts, total_memories=sum(counts.values()),
                known_projects=memory_reads.known_projects(db), entity_roots=entity_reads.entity_roots(db),
                events=store.log.last_seq(),
            )

    def list_memories(self, caller: Caller, *, memory_type: MemoryType | None = None, scope: Scope | None = None,
                      project: str | None = None, entity: str | None = None, tag: str | None = None,
                      cursor: int | None = None, limit: int = 20, deleted: bool = False) -> MemoryPage:
        """The caller's live memories, most recently changed first, filtered exactly (a person
        browsing their memories, where `retrieve_context` ranks for an assistant)."""
        check_limit(limit)
        _seq_cursor(cursor, 1)
        filters = {"memory_type": memory_type.value if memory_type else None, "scope": scope.value if scope else None,
                   "project": clean_entity(project, "project"), "entity": clean_entity(entity),
                   "tag": clean_tags([tag])[0] if tag is not None else None}
        store = self._store(caller)
        with store.lock:
            memories, next_cursor = memory_reads.memory_page(store.view.db, **filters, before_seq=cursor, limit=limit,
                                                      deleted=deleted)
            self._audit_read(caller, "list_memories", None, [m.id for m in memories],
                             {k: v for k, v in filters.items() if v is not None})
            return MemoryPage(memories=memories, next_cursor=next_cursor)

    def timeline(self, caller: Caller, cursor: int | None = None, limit: int = 50) -> TimelinePage:
        """The caller's own log, newest event first: what was stored, changed, read and forgotten,
        through which client. Reading it is itself recorded, as every read is."""
        check_limit(limit)
        _seq_cursor(cursor, 1)
        store = self._store(caller)
        with store.lock:
            self._audit_read(caller, "timeline", None, [])
            newest = store.log.last_seq() if cursor is None else min(cursor - 1, store.log.last_seq())
            oldest = max(0, newest - limit)
            # Seqs are gapless: the page is exactly the events in (oldest, newest].
            entries = [self._history_entry(store, seq) for seq in range(newest, oldest, -1)]
            return TimelinePage(entries=entries, next_cursor=oldest + 1 if oldest > 0 else None)

    def verify_chain(self, caller: Caller) -> ChainStatus:
        """Hash chain, signatures and seq contiguity of the caller's log, as `memory verify` checks them.

        The whole chain once per process, then only the events after the last verified one:
        every page view appends a read, and checking 100k signatures takes seconds."""
        self._store(caller)  # a person without a log yet gets one, as on any other call
        key = caller.identity.key
        verified = self._verified_chains.get(key)
        # Its own connection and one read transaction: appends go on while it runs.
        report = verify_user(self.data_dir, caller.identity, self.keys, None,
                             after=verified[:2] if verified else None, logs=self.logs)
        count = report.event_count + (verified[2] if verified else 0)
        if report.ok and report.event_count:
            self._verified_chains[key] = (report.last_seq, report.head_hash, count)
        head = report.head_hash if report.event_count or not verified else verified[1]
        return ChainStatus(ok=report.ok, event_count=count, head_hash=head,
                           problems=[p.message if p.seq is None else f"seq {p.seq}: {p.message}"
                                     for p in report.problems])

    # -- import ---------------------------------------------------------------------------

    def import_memories(self, caller: Caller, format_name: str, data: bytes) -> ImportReport:
        """Another tool's export as ordinary `memory.stored` events (each with `imported_from`),
        appended at once: a bad record refuses the whole file. A record imported before (its
        memory id derives from the person, the format and its id there) is skipped, so the same
        file twice adds nothing; a record that repeats a live memory, or an earlier record, goes
        through the duplicate check of `store_memory` and is reported instead of stored."""
        parsed = parse_import(format_name, data)
        store = self._store(caller)
        items = parsed.items
        vectors = self.embedder.embed_documents([i.text for i in items]) if items else []
        store.catch_up_embeddings()
        report = ImportReport(format=parsed.format, records=len(items))
        with store.lock:
            db = store.view.db
            ended_as: dict[str, str] = {}  # source id -> the memory it is now
            accepted: dict[str, MemoryStored] = {}
            accepted_vectors: list[np.ndarray] = []
            batch = VectorIndex(self.embedder.dimensions)
            for item, vector in zip(items, vectors, strict=True):
                memory_id = imported_memory_id(caller.identity, parsed.format, item.source_id)
                if item.source_id in ended_as:
                    continue
                if memory_id in accepted or memory_reads.memory_event_seqs(db, memory_id, 0, 1):
                    report.already_imported += 1
                    ended_as[item.source_id] = memory_id
                    continue
                payload = MemoryStored(memory_id=memory_id, **_memory_fields(item),
                                       imported_from=import_source(parsed, item))
                payload.status = initial_status(item.memory_type, item.status)
                duplicate = import_duplicate(db, store.view.embeddings.index, batch, accepted, payload, vector)
                if duplicate is not None:
                    report.duplicates.append(ImportDuplicate(where=item.where, duplicate_of=duplicate))
                    ended_as[item.source_id] = duplicate
                    continue
                accepted[memory_id] = payload
                accepted_vectors.append(vector)
                batch.upsert(memory_id, vector)
                ended_as[item.source_id] = memory_id
            links: list[EventPayload] = []
            for link in dict.fromkeys(parsed.links):
                source, target = ended_as.get(link.source), ended_as.get(link.target)
                if source and target and source != target and (source in accepted or target in accepted):
                    links.append(MemoriesLinked(source_id=source, target_id=target, link_type=LinkType(link.link_type)))
            if accepted:
                store.view.embeddings.prime_vectors([p.text for p in accepted.values()], accepted_vectors)
                self._append(caller, [*accepted.values(), *links], embed_now=True)
            report.imported = list(accepted)
            report.links = len(links) if accepted else 0
            return report

