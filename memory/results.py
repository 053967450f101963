"""What the service answers: plain msgspec structs that every adapter can serialise."""

from typing import Any

import msgspec

from memory.model import Entity, Memory

__all__ = [
    "RetrievedMemory",
    "RetrievalResult",
    "SearchHit",
    "ForgetResult",
    "HistoryEntry",
    "HistoryPage",
    "EntityPage",
    "ProjectSummary",
    "ContextInfo",
    "SyncResult",
    "MemoryPage",
    "TimelinePage",
    "ChainStatus",
    "SimilarMemory",
    "StoreResult",
    "StoredMemory",
    "ImportDuplicate",
    "ImportReport",
    "title_of",
]


def title_of(text: str) -> str:
    """A memory's title wherever one is shown: its first line, at most 80 characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 80 else line[:77].rstrip() + "..."


class RetrievedMemory(msgspec.Struct, kw_only=True):
    memory: Memory
    score: float
    related: list[Memory] = []


class RetrievalResult(msgspec.Struct, kw_only=True):
    query: str
    memories: list[RetrievedMemory]
    as_of_seq: int | None = None
    project: str | None = None


class SearchHit(msgspec.Struct, kw_only=True):
    id: str
    title: str
    snippet: str
    score: float


class ForgetResult(msgspec.Struct, kw_only=True):
    memory_id: str
    tombstone_seq: int
    redacted_seqs: list[int]


class HistoryEntry(msgspec.Struct, kw_only=True):
    seq: int
    type: str
    recorded_at: str
    actor: str
    client_id: str | None
    request_id: str | None
    redacted: bool
    payload: dict[str, Any] | None


class HistoryPage(msgspec.Struct, kw_only=True):
    memory_id: str
    entries: list[HistoryEntry]
    next_cursor: int | None = None


class EntityPage(msgspec.Struct, kw_only=True):
    entities: list[Entity]
    next_cursor: str | None = None


class ProjectSummary(msgspec.Struct, kw_only=True):
    project: str
    counts_by_type: dict[str, int]
    counts_by_status: dict[str, int]
    recent_decisions: list[Memory]
    open_tasks: list[Memory]


class ContextInfo(msgspec.Struct, kw_only=True):
    user: str
    active_project: str | None
    counts_by_type: dict[str, int]
    total_memories: int
    known_projects: list[str]
    entity_roots: list[str]
    events: int


class SyncResult(msgspec.Struct, kw_only=True):
    created: list[str] = []
    updated: list[str] = []
    superseded: list[str] = []




class MemoryPage(msgspec.Struct, kw_only=True):
    memories: list[Memory]
    #: `before` for the next page, None on the last one.
    next_cursor: int | None = None


class TimelinePage(msgspec.Struct, kw_only=True):
    """A person's log, newest event first."""

    entries: list[HistoryEntry]
    next_cursor: int | None = None


class ChainStatus(msgspec.Struct, kw_only=True):
    """Whether a log's hash chain and signatures verify, as `memory verify` checks them."""

    ok: bool
    event_count: int
    head_hash: str
    problems: list[str] = []


class SimilarMemory(msgspec.Struct, kw_only=True):
    id: str
    text: str
    score: float


class StoreResult(msgspec.Struct, kw_only=True):
    """A store's answer: the memory (the existing one when this was a duplicate), the id it
    duplicated, and the live memories closest to it, so the caller may update one instead."""

    memory: Memory
    duplicate_of: str | None = None
    similar: list[SimilarMemory] = []


class StoredMemory(Memory, kw_only=True):
    """A store's answer flattened for REST: the memory's own fields, then `duplicate_of` and `similar`."""

    duplicate_of: str | None = None
    similar: list[SimilarMemory] = []

    @classmethod
    def of(cls, result: StoreResult) -> "StoredMemory":
        fields = {f: getattr(result.memory, f) for f in result.memory.__struct_fields__}
        return cls(**fields, duplicate_of=result.duplicate_of, similar=result.similar)


class ImportDuplicate(msgspec.Struct, kw_only=True):
    where: str  # the record in the file: "line 3", "record 12"
    duplicate_of: str


class ImportReport(msgspec.Struct, kw_only=True):
    """What one import did: all of it in one append, or nothing."""

    format: str
    records: int
    imported: list[str] = []  # ids of the new memories
    already_imported: int = 0  # records an earlier import of the same source brought
    duplicates: list[ImportDuplicate] = []  # records a live memory (or an earlier record) already says
    links: int = 0
