"""What the MCP tools take and return, as msgspec structs built from the domain's shapes: each
tool's inputSchema and outputSchema derive from these (memory/server/mcp_registry.py).

Results mirror `memory.results`/`memory.model` by subclassing them, bounded for an assistant's
context window, with the url of every memory on this server. Arguments are the domain's commands
where one exists, narrowed where the tool promises less (a smaller page).
"""

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from memory.commands import MAX_SUPERSEDES, RetrieveQuery, UpdateMemory
from memory.model import MAX_NAME_LENGTH, Entity, Link, LinkType, Memory
from memory.results import (
    ContextInfo,
    EntityPage,
    ForgetResult,
    HistoryEntry,
    HistoryPage,
    ProjectSummary,
    SyncResult,
    title_of,
)
from memory.server.mcp_registry import fields_taking

__all__ = [
    "Id",
    "EntityName",
    "NoArguments",
    "SearchArgs",
    "IdArgs",
    "RetrieveArgs",
    "ProjectArgs",
    "LinkArgs",
    "ListEntitiesArgs",
    "SearchEntitiesArgs",
    "DeleteArgs",
    "UpdateArgs",
    "RegisterEntityArgs",
    "HistoryArgs",
    "SearchResult",
    "SearchResults",
    "FetchedMemory",
    "MemoryOut",
    "RetrievedMemoryOut",
    "SimilarOut",
    "StoredOut",
    "RetrievalOut",
    "ProjectSummaryOut",
    "ContextInfoOut",
    "EntitiesOut",
    "ForgetOut",
    "HistoryEntryOut",
    "HistoryPageOut",
    "SyncOut",
    "LinkOut",
    "ClearableField",
    "MAX_TEXT_IN_LISTS",
    "MAX_TEXT_IN_RELATED",
    "MAX_PAYLOAD_TEXT",
]

#: A memory's text may be 32 KiB; lists of them would flood the context window. `fetch` gives it whole.
MAX_TEXT_IN_LISTS = 2000
MAX_TEXT_IN_RELATED = 300
MAX_PAYLOAD_TEXT = 500
_MAX_QUERY = 4096

Id = Annotated[str, Meta(min_length=1, max_length=64,
                         description="A memory id, as returned by search, retrieve_context or store_memory.")]
EntityName = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH,
                                 description="A dotted name: 'acme', 'acme.billing', 'people.sam'.")]


def _cut(text: str, limit: int | None) -> tuple[str, bool]:
    if limit is None or len(text) <= limit:
        return text, False
    return text[: limit - 1].rstrip() + "…", True


def _fields(struct: msgspec.Struct) -> dict[str, Any]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}


class _Args(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


# -- arguments ------------------------------------------------------------------------------


class NoArguments(_Args):
    pass


class SearchArgs(_Args):
    query: Annotated[str, Meta(max_length=_MAX_QUERY, description="What to look for, in natural language.")]
    min_score: Annotated[float, Meta(ge=0.0, le=100.0, description=(
        "Leave out memories scoring under this. Default: the calibrated relevance floor; 0 returns the "
        "closest anyway."))] | None = None


class IdArgs(_Args):
    id: Id


class RetrieveArgs(RetrieveQuery, kw_only=True, forbid_unknown_fields=True):
    """The domain's query, with the text bounded and a page an assistant's context can hold."""

    query: Annotated[str, Meta(max_length=_MAX_QUERY, description="What the answer is about, in natural language. "
                                                                  "Empty: the most relevant recent memories.")] = ""
    limit: Annotated[int, Meta(ge=1, le=50, description="How many memories, 1 to 50.")] = 10


class ProjectArgs(_Args):
    project: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH,
                                 description="The project's name, e.g. 'acme' or 'acme.website'.")]


class LinkArgs(_Args):
    source_id: Annotated[str, Meta(max_length=64, description="The memory the link starts from.")]
    target_id: Annotated[str, Meta(max_length=64, description="The memory it points to.")]
    link_type: Annotated[LinkType, Meta(description="How source relates to target: supports, contradicts, "
                                                    "supersedes, refines, depends_on, implements, example_of.")]


class ListEntitiesArgs(_Args):
    prefix: Annotated[str | None, Meta(description="Only this entity and those below it, e.g. 'acme' lists acme, "
                                                   "acme.billing, ...")] = None
    cursor: Annotated[str | None, Meta(description="next_cursor from the previous page.")] = None
    limit: Annotated[int, Meta(ge=1, le=100, description="Page size, 1 to 100.")] = 50


class SearchEntitiesArgs(_Args):
    query: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH,
                               description="A name or part of one; typos are tolerated.")]
    limit: Annotated[int, Meta(ge=1, le=50, description="How many, 1 to 50.")] = 10


class DeleteArgs(IdArgs):
    reason: Annotated[Annotated[str, Meta(max_length=500)] | None, Meta(description="Why, for the record.")] = None


def _clearable() -> tuple[str, ...]:
    """The fields of an update that null clears (those whose type allows None)."""
    return fields_taking(UpdateMemory, msgspec.inspect.NoneType)


ClearableField = Literal[_clearable()]  # type: ignore[valid-type]


class UpdateArgs(UpdateMemory, kw_only=True, forbid_unknown_fields=True):
    """The domain's update, with the id, and `clear` for what JSON null cannot say to every client:
    here a null argument means "not given", as an assistant sends it for what it leaves out."""

    id: Id
    clear: Annotated[list[ClearableField], Meta(  # type: ignore[valid-type]
        description=f"Fields to empty: {', '.join(_clearable())}.")] = []
    supersedes: Annotated[list[str], Meta(max_length=MAX_SUPERSEDES, description=(
        "Ids of older memories this one now replaces: they are marked superseded."))] | UnsetType = UNSET


class RegisterEntityArgs(_Args):
    name: EntityName
    description: Annotated[str | None, Meta(description="What it is, in a sentence.")] = None
    parent: Annotated[str | None, Meta(description="The entity it belongs under, e.g. 'acme' for "
                                                   "'acme.billing'.")] = None


class HistoryArgs(IdArgs):
    cursor: Annotated[Annotated[int, Meta(ge=0)] | None, Meta(description="next_cursor from the previous page.")] = None
    limit: Annotated[int, Meta(ge=1, le=50, description="Events per page, 1 to 50.")] = 20


# -- results --------------------------------------------------------------------------------


class SearchResult(msgspec.Struct, kw_only=True):
    id: str
    title: str
    url: str


class SearchResults(msgspec.Struct, kw_only=True):
    results: list[SearchResult]


class FetchedMemory(msgspec.Struct, kw_only=True):
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


class MemoryOut(Memory, kw_only=True):
    url: Annotated[str, Meta(description="This memory on this server.")]
    text_truncated: Annotated[bool, Meta(description="True when text was shortened; `fetch` the id for all "
                                                     "of it.")] = False

    @classmethod
    def of(cls, memory: Memory, url: str, max_text: int | None = None, **extra: Any) -> Any:
        fields = _fields(memory)
        fields["text"], fields["text_truncated"] = _cut(memory.text, max_text)
        return cls(url=url, **fields, **extra)


class SimilarOut(msgspec.Struct, kw_only=True):
    id: str
    text: str
    score: Annotated[float, Meta(description="Cosine similarity to the text just stored, 0 to 1.")]

    @classmethod
    def of(cls, similar: Any) -> "SimilarOut":
        return cls(id=similar.id, text=_cut(similar.text, MAX_TEXT_IN_RELATED)[0], score=similar.score)


class StoredOut(MemoryOut, kw_only=True):
    duplicate_of: Annotated[str | None, Meta(description="Set when nothing was stored because this live memory "
                                                         "already says the same; it is the one returned.")] = None
    similar: Annotated[list[SimilarOut], Meta(description="Up to 3 live memories close to the text: update or "
                                                          "supersede one of them if it says the same thing.")] = []


class RetrievedMemoryOut(MemoryOut, kw_only=True):
    score: Annotated[float, Meta(description="Relevance, higher is better; comparable within one answer only.")]
    related: Annotated[list[MemoryOut], Meta(description="Linked memories (include_related).")] = []


class RetrievalOut(msgspec.Struct, kw_only=True):
    query: str
    project: Annotated[str | None, Meta(description="The project the results were filtered to, if any.")]
    as_of_seq: Annotated[int | None, Meta(description="The event seq the answer reflects, when as_of was given.")]
    memories: list[RetrievedMemoryOut]
    message: Annotated[str | None, Meta(description="Why there are no memories, when there are none.")] = None


class ProjectSummaryOut(ProjectSummary, kw_only=True):
    active: Annotated[bool, Meta(description="Whether this is now the caller's active project.")]
    recent_decisions: list[MemoryOut]
    open_tasks: list[MemoryOut]

    @classmethod
    def of(cls, summary: ProjectSummary, url_of: Any, active: bool) -> "ProjectSummaryOut":
        def listed(memories: list[Memory]) -> list[MemoryOut]:
            return [MemoryOut.of(m, url_of(m.id), MAX_TEXT_IN_LISTS) for m in memories]

        return cls(**_fields(summary) | {"recent_decisions": listed(summary.recent_decisions),
                                         "open_tasks": listed(summary.open_tasks)}, active=active)


class ContextInfoOut(ContextInfo, kw_only=True):
    user: Annotated[str, Meta(description="The account whose memories these are.")]
    issuer: str
    client_id: Annotated[str, Meta(description="The client this connection came through.")]
    scopes: Annotated[list[str], Meta(description="What this connection may do: memories:read, memories:write.")]
    events: Annotated[int, Meta(description="Events in the caller's log so far.")]
    server_version: str
    protocol_version: Annotated[str | None, Meta(description="The MCP protocol version of this connection.")]

    @classmethod
    def of(cls, info: ContextInfo, **extra: Any) -> "ContextInfoOut":
        return cls(**_fields(info), **extra)


class EntitiesOut(msgspec.Struct, kw_only=True):
    entities: list[Entity]


class EntityPageOut(EntityPage, kw_only=True):
    next_cursor: Annotated[str | None, Meta(description="Pass as cursor for the next page; null on the last "
                                                        "page.")] = None


class ForgetOut(ForgetResult, kw_only=True):
    forgotten: bool = True
    tombstone_seq: Annotated[int, Meta(description="The event that records the erasure.")]
    redacted_seqs: Annotated[list[int], Meta(description="Earlier events whose content was erased.")]

    @classmethod
    def of(cls, result: ForgetResult) -> "ForgetOut":
        return cls(**_fields(result))


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value, MAX_PAYLOAD_TEXT)[0]
    if isinstance(value, list):
        return [_bounded(v) for v in value[:50]]
    if isinstance(value, dict):
        return {k: _bounded(v) for k, v in value.items()}
    return value


class HistoryEntryOut(HistoryEntry, kw_only=True):
    type: Annotated[str, Meta(description="memory.stored, memory.updated, memories.read, memory.deleted, ...")]
    redacted: Annotated[bool, Meta(description="The content was erased by forget_memory.")]
    payload: Annotated[dict[str, Any] | None, Meta(description="What the event recorded (long texts "
                                                               "shortened).")]

    @classmethod
    def of(cls, entry: HistoryEntry) -> "HistoryEntryOut":
        return cls(**_fields(entry) | {"payload": _bounded(entry.payload)})


class HistoryPageOut(HistoryPage, kw_only=True):
    entries: list[HistoryEntryOut]
    next_cursor: Annotated[int | None, Meta(description="Pass as cursor for the next page; null on the last "
                                                        "page.")] = None

    @classmethod
    def of(cls, page: HistoryPage) -> "HistoryPageOut":
        return cls(memory_id=page.memory_id, entries=[HistoryEntryOut.of(e) for e in page.entries],
                   next_cursor=page.next_cursor)


#: A link is answered as the domain defines it.
LinkOut = Link


class SyncOut(SyncResult, kw_only=True):
    created: Annotated[list[str], Meta(description="Ids of new memories.")]
    updated: Annotated[list[str], Meta(description="Ids of memories replaced in place (status updates, "
                                                   "feedback).")]
    superseded: Annotated[list[str], Meta(description="Ids now marked superseded.")]

    @classmethod
    def of(cls, result: SyncResult) -> "SyncOut":
        return cls(**_fields(result))
