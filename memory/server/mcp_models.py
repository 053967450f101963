"""What the MCP tools return, as Pydantic models: the SDK derives each tool's outputSchema from
them (it cannot from msgspec structs). They mirror `memory.results`/`memory.model`, bounded for an
assistant's context window, with the url of every memory on this server."""

from typing import Any, Literal

import msgspec
from pydantic import BaseModel, Field

from memory.model import Entity, LinkType, Memory, MemoryType, Scope, Status
from memory.results import ContextInfo, EntityPage, ForgetResult, HistoryEntry, HistoryPage, ProjectSummary, SyncResult

__all__ = [
    "MemoryTypeName",
    "ScopeName",
    "StatusName",
    "LinkTypeName",
    "ClearableField",
    "SessionItemIn",
    "SearchResult",
    "SearchResults",
    "FetchedMemory",
    "LinkOut",
    "MemoryOut",
    "RetrievedMemoryOut",
    "SimilarOut",
    "StoredOut",
    "RetrievalOut",
    "ProjectSummaryOut",
    "ContextInfoOut",
    "EntityOut",
    "EntityPageOut",
    "EntitiesOut",
    "ForgetOut",
    "HistoryEntryOut",
    "HistoryPageOut",
    "SyncOut",
    "title_of",
    "MAX_TEXT_IN_LISTS",
    "MAX_TEXT_IN_RELATED",
    "MAX_PAYLOAD_TEXT",
]

# Literal rather than the enums themselves: the values are then inlined in each tool's schema,
# where an assistant reads them, instead of behind a $ref.
MemoryTypeName = Literal[tuple(t.value for t in MemoryType)]  # type: ignore[valid-type]
ScopeName = Literal[tuple(s.value for s in Scope)]  # type: ignore[valid-type]
StatusName = Literal[tuple(s.value for s in Status)]  # type: ignore[valid-type]
LinkTypeName = Literal[tuple(t.value for t in LinkType)]  # type: ignore[valid-type]
ClearableField = Literal["entity", "status", "occurred_at"]

#: A memory's text may be 32 KiB; lists of them would flood the context window. `fetch` gives it whole.
MAX_TEXT_IN_LISTS = 2000
MAX_TEXT_IN_RELATED = 300
MAX_PAYLOAD_TEXT = 500


def title_of(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 80 else line[:77].rstrip() + "..."


def _cut(text: str, limit: int | None) -> tuple[str, bool]:
    if limit is None or len(text) <= limit:
        return text, False
    return text[: limit - 1].rstrip() + "…", True


class SessionItemIn(BaseModel):
    text: str = Field(description="The decision, learning, status or feedback, in one or a few sentences.")
    entity: str | None = Field(None, description="What it is about, dotted for a hierarchy: 'acme.billing'. "
                                                  "Required for status_updates and feedback.")
    tags: list[str] = Field(default_factory=list, description="Extra tags (the kind is tagged automatically).")
    status: StatusName | None = Field(None, description="active | completed | superseded | parked.")
    supersedes: str | None = Field(None, description="Id of an older memory this one replaces; that one is "
                                                     "linked and marked superseded.")


class SearchResult(BaseModel):
    id: str
    title: str
    url: str


class SearchResults(BaseModel):
    results: list[SearchResult]


class FetchedMemory(BaseModel):
    id: str
    title: str
    text: str
    url: str
    metadata: dict[str, Any]

    @classmethod
    def of(cls, memory: Memory, url: str) -> "FetchedMemory":
        metadata = msgspec.to_builtins(memory)
        for field in ("id", "text"):
            metadata.pop(field)
        return cls(id=memory.id, title=title_of(memory.text), text=memory.text, url=url, metadata=metadata)


class LinkOut(BaseModel):
    source_id: str
    target_id: str
    link_type: LinkTypeName


class MemoryOut(BaseModel):
    id: str
    url: str = Field(description="This memory on this server.")
    text: str
    text_truncated: bool = Field(False, description="True when text was shortened; `fetch` the id for all of it.")
    memory_type: MemoryTypeName
    scope: ScopeName
    entity: str | None = None
    project: str | None = None
    task_id: str | None = None
    tags: list[str] = []
    status: StatusName | None = None
    priority: int = 0
    created_at: str
    updated_at: str
    occurred_at: str | None = None
    deleted: bool = False
    links: list[LinkOut] = []

    @classmethod
    def of(cls, memory: Memory, url: str, max_text: int | None = None, **extra: Any) -> Any:
        data = msgspec.to_builtins(memory)
        data["text"], data["text_truncated"] = _cut(memory.text, max_text)
        return cls(url=url, **data, **extra)


class SimilarOut(BaseModel):
    id: str
    text: str
    score: float = Field(description="Cosine similarity to the text just stored, 0 to 1.")

    @classmethod
    def of(cls, similar: Any) -> "SimilarOut":
        return cls(id=similar.id, text=_cut(similar.text, MAX_TEXT_IN_RELATED)[0], score=similar.score)


class StoredOut(MemoryOut):
    duplicate_of: str | None = Field(None, description="Set when nothing was stored because this live "
                                                       "memory already says the same; it is the one returned.")
    similar: list[SimilarOut] = Field(default_factory=list, description="Up to 3 live memories close to "
                                      "the text: update or supersede one of them if it says the same thing.")


class RetrievedMemoryOut(MemoryOut):
    score: float = Field(description="Relevance, higher is better; comparable within one answer only.")
    related: list[MemoryOut] = Field(default_factory=list, description="Linked memories (include_related).")


class RetrievalOut(BaseModel):
    query: str
    project: str | None = Field(description="The project the results were filtered to, if any.")
    as_of_seq: int | None = Field(description="The event seq the answer reflects, when as_of was given.")
    memories: list[RetrievedMemoryOut]
    message: str | None = Field(default=None, description="Why there are no memories, when there are none.")


class ProjectSummaryOut(BaseModel):
    project: str
    active: bool = Field(description="Whether this is now the caller's active project.")
    counts_by_type: dict[str, int]
    counts_by_status: dict[str, int]
    recent_decisions: list[MemoryOut]
    open_tasks: list[MemoryOut]

    @classmethod
    def of(cls, summary: ProjectSummary, url_of: Any, active: bool) -> "ProjectSummaryOut":
        return cls(
            project=summary.project, active=active, counts_by_type=summary.counts_by_type,
            counts_by_status=summary.counts_by_status,
            recent_decisions=[MemoryOut.of(m, url_of(m.id), MAX_TEXT_IN_LISTS) for m in summary.recent_decisions],
            open_tasks=[MemoryOut.of(m, url_of(m.id), MAX_TEXT_IN_LISTS) for m in summary.open_tasks],
        )


class ContextInfoOut(BaseModel):
    user: str = Field(description="The account whose memories these are.")
    issuer: str
    client_id: str = Field(description="The client this connection came through.")
    scopes: list[str] = Field(description="What this connection may do: memories:read, memories:write.")
    active_project: str | None
    counts_by_type: dict[str, int]
    total_memories: int
    known_projects: list[str]
    entity_roots: list[str]
    events: int = Field(description="Events in the caller's log so far.")
    server_version: str
    protocol_version: str | None = Field(description="The MCP protocol version of this connection.")

    @classmethod
    def of(cls, info: ContextInfo, **extra: Any) -> "ContextInfoOut":
        return cls(**msgspec.to_builtins(info), **extra)


class EntityOut(BaseModel):
    name: str
    description: str | None = None
    parent: str | None = None
    registered: bool = Field(False, description="Registered explicitly, rather than only seen on memories.")
    memory_count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None

    @classmethod
    def of(cls, entity: Entity) -> "EntityOut":
        return cls(**msgspec.to_builtins(entity))


class EntityPageOut(BaseModel):
    entities: list[EntityOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page.")

    @classmethod
    def of(cls, page: EntityPage) -> "EntityPageOut":
        return cls(entities=[EntityOut.of(e) for e in page.entities], next_cursor=page.next_cursor)


class EntitiesOut(BaseModel):
    entities: list[EntityOut]


class ForgetOut(BaseModel):
    memory_id: str
    forgotten: bool = True
    tombstone_seq: int = Field(description="The event that records the erasure.")
    redacted_seqs: list[int] = Field(description="Earlier events whose content was erased.")

    @classmethod
    def of(cls, result: ForgetResult) -> "ForgetOut":
        return cls(**msgspec.to_builtins(result))


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value, MAX_PAYLOAD_TEXT)[0]
    if isinstance(value, list):
        return [_bounded(v) for v in value[:50]]
    if isinstance(value, dict):
        return {k: _bounded(v) for k, v in value.items()}
    return value


class HistoryEntryOut(BaseModel):
    seq: int
    type: str = Field(description="memory.stored, memory.updated, memories.read, memory.deleted, ...")
    recorded_at: str
    actor: str
    client_id: str | None
    request_id: str | None
    redacted: bool = Field(description="The content was erased by forget_memory.")
    payload: dict[str, Any] | None = Field(description="What the event recorded (long texts shortened).")

    @classmethod
    def of(cls, entry: HistoryEntry) -> "HistoryEntryOut":
        data = msgspec.to_builtins(entry)
        data["payload"] = _bounded(data["payload"])
        return cls(**data)


class HistoryPageOut(BaseModel):
    memory_id: str
    entries: list[HistoryEntryOut]
    next_cursor: int | None = Field(description="Pass as cursor for the next page; null on the last page.")

    @classmethod
    def of(cls, page: HistoryPage) -> "HistoryPageOut":
        return cls(memory_id=page.memory_id, entries=[HistoryEntryOut.of(e) for e in page.entries],
                   next_cursor=page.next_cursor)


class SyncOut(BaseModel):
    created: list[str] = Field(description="Ids of new memories.")
    updated: list[str] = Field(description="Ids of memories replaced in place (status updates, feedback).")
    superseded: list[str] = Field(description="Ids now marked superseded.")

    @classmethod
    def of(cls, result: SyncResult) -> "SyncOut":
        return cls(**msgspec.to_builtins(result))
