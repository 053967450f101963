"""The MCP tools: one thin adapter per service operation, for an assistant to call.

Each tool finds the caller's `Principal` on the HTTP request the SDK hands it, checks the scope
its operation needs, runs the (blocking) service call in a worker thread and turns domain errors
into tool errors (`isError: true`) a person can read.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from memory.commands import RetrieveQuery, StoreMemory, SyncSession, UpdateMemory, check_text_fields, parse_command
from memory.errors import LogIntegrityError, MemoryServiceError, StorageError
from memory.ids import new_uuid7
from memory.model import LinkType
from memory.server.auth import PRINCIPAL_SCOPE_KEY, READ_SCOPE, WRITE_SCOPE, Principal
from memory.server.mcp_models import (
    MAX_TEXT_IN_LISTS,
    MAX_TEXT_IN_RELATED,
    ClearableField,
    ContextInfoOut,
    EntitiesOut,
    EntityOut,
    EntityPageOut,
    FetchedMemory,
    ForgetOut,
    HistoryPageOut,
    LinkOut,
    LinkTypeName,
    MemoryOut,
    MemoryTypeName,
    ProjectSummaryOut,
    RetrievalOut,
    RetrievedMemoryOut,
    ScopeName,
    SearchResult,
    SearchResults,
    SessionItemIn,
    SimilarOut,
    StatusName,
    StoredOut,
    SyncOut,
)
from memory.server.icons import IconKind, icons
from memory.server.metrics import ToolCallTally, instrument_tool
from memory.server.settings import ServerSettings, server_version
from memory.server.widget import widget_extension, widget_tool_meta
from memory.service import Caller, MemoryService

__all__ = ["build_mcp_server", "TOOL_NAMES", "READ_ONLY_TOOLS", "DESTRUCTIVE_TOOLS"]

_T = TypeVar("_T")

READ_ONLY_TOOLS = frozenset({"search", "fetch", "retrieve_context", "get_context_info", "list_entities",
                             "search_entities", "memory_history"})
DESTRUCTIVE_TOOLS = frozenset({"delete_memory", "forget_memory", "update_memory"})
_IDEMPOTENT_WRITES = frozenset({"set_project", "register_entity", "link_memories", "delete_memory",
                                "forget_memory", "update_memory"})
_SEARCH_LIMIT = 10
_MIN_SCORE = ("Leave out memories scoring under this (scores are about 0 to 1.5). Default: the calibrated "
              "relevance floor, so a query about nothing stored returns none; 0 returns the closest anyway.")
_NOTHING_RELEVANT = ("No stored memory is relevant to this query (all scored under the relevance floor). "
                     "Pass min_score: 0 to get the closest memories anyway.")
_MAX_REQUEST_ID = 128

INSTRUCTIONS = """\
Long-term memory for the user, kept across conversations and assistants.

At the start of a conversation, call get_context_info (who the user is, their projects) and, when
the user works on a project, set_project. Before answering anything that may depend on what the
user told you before (preferences, decisions, people, ongoing work), call retrieve_context. Store
what is worth remembering with store_memory — stable facts about the user (core_identity),
project facts and decisions (project_context), how the user wants tasks done (task_instruction),
and notable events (episodic) — one fact per memory, in plain sentences. At the end of a working
session, sync_session records decisions, learnings, status and feedback in one call.
Correct memories with update_memory, retire them with delete_memory, and only erase them
completely with forget_memory when the user asks for that.
"""

Id = Annotated[str, Field(description="A memory id, as returned by search, retrieve_context or store_memory.",
                          min_length=1, max_length=64)]
EntityName = Annotated[str, Field(description="A dotted name: 'acme', 'acme.billing', 'people.sam'.",
                                  min_length=1, max_length=200)]


def _request_id(ctx: Context) -> str:
    request = ctx.request_context.request
    given = request.headers.get("x-request-id") if request is not None else None
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return new_uuid7()


def _principal(ctx: Context) -> Principal:
    request = ctx.request_context.request
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY) if request is not None else None
    if not isinstance(principal, Principal):
        # The auth middleware guards /mcp, so this means the server was wired wrongly.
        raise ToolError("this connection is not authenticated")
    return principal


def _command(kind: type[_T], data: dict[str, Any]) -> _T:
    try:
        return parse_command(kind, data)
    except MemoryServiceError as exc:
        raise ToolError(str(exc)) from None


def _explained(exc: MemoryServiceError) -> str:
    if isinstance(exc, LogIntegrityError):
        return f"your memory log failed an integrity check and is locked until the operator looks at it ({exc})"
    if isinstance(exc, StorageError):
        # Its message says whether anything was recorded (the log) or only not yet indexed.
        return f"the server could not save this: {exc}"
    return str(exc)


class _MemoryTools:
    def __init__(self, service: MemoryService, settings: ServerSettings):
        self._service = service
        self._settings = settings

    @staticmethod
    def _caller(ctx: Context, needs: str) -> Caller:
        """The caller, if their token grants `needs`: checked before the arguments are, so a
        read-only connection learns that first."""
        principal = _principal(ctx)
        if not principal.may(needs):
            verb = "change" if needs == WRITE_SCOPE else "read"
            raise ToolError(f"this connection may not {verb} memories: its token lacks the {needs!r} scope "
                            f"(it has: {' '.join(sorted(principal.scopes)) or 'none'})")
        return Caller(principal.identity, principal.client_id, _request_id(ctx))

    async def _run(self, ctx: Context, needs: str, operation: Callable[..., _T], *args: Any) -> _T:
        return await self._call(self._caller(ctx, needs), operation, *args)

    @staticmethod
    async def _call(caller: Caller, operation: Callable[..., _T], *args: Any) -> _T:
        try:
            # Every argument, by the name the service gives it: pydantic lets a lone surrogate
            # through some str fields, and a sqlite or model call would fail on it unexpectedly.
            for name, value in inspect.signature(operation).bind(caller, *args).arguments.items():
                if value is not caller:
                    check_text_fields(value, name)
            return await anyio.to_thread.run_sync(functools.partial(operation, caller, *args))
        except MemoryServiceError as exc:
            raise ToolError(_explained(exc)) from None

    def _url(self, memory_id: str) -> str:
        return self._settings.memory_url(memory_id)

    def _memory(self, memory: Any, max_text: int | None = None) -> MemoryOut:
        return MemoryOut.of(memory, self._url(memory.id), max_text)

    # -- the ChatGPT pair ---------------------------------------------------------------------

    async def search(
        self,
        query: Annotated[str, Field(description="What to look for, in natural language.", max_length=4096)],
        ctx: Context,
        min_score: Annotated[float | None, Field(ge=0.0, le=100.0, description=_MIN_SCORE)] = None,
    ) -> SearchResults:
        """Search the user's memories; returns ids, titles and urls to `fetch`.

        Use it to find what the user told you before. Matches by meaning, not only by words.
        Example: search({"query": "how does Sam like meeting notes"}).
        For filters (type, project, tags), whole texts and scores use retrieve_context instead.
        """
        hits = await self._run(ctx, READ_SCOPE, self._service.search, query, _SEARCH_LIMIT, min_score)
        # ChatGPT's contract is `results` alone: an empty list is how nothing relevant is said here.
        return SearchResults(results=[SearchResult(id=h.id, title=h.title, url=self._url(h.id)) for h in hits])

    async def fetch(self, id: Id, ctx: Context) -> FetchedMemory:  # noqa: A002 - the ChatGPT contract names it id
        """Fetch one memory by id: its whole text, its url, and its metadata (type, scope, project,
        entity, tags, status, priority, dates, links).

        Example: fetch({"id": "0196f1c2-..."}) with an id from search.
        """
        memory = await self._run(ctx, READ_SCOPE, self._service.get, id)
        return FetchedMemory.of(memory, self._url(memory.id))

    # -- remembering -------------------------------------------------------------------------

    async def store_memory(
        self,
        text: Annotated[str, Field(description="The memory, in plain sentences (at most 32 KiB). One fact or "
                                               "event per memory.")],
        ctx: Context,
        memory_type: Annotated[MemoryTypeName, Field(
            description="core_identity: stable facts about the user (name, role, preferences); "
                        "project_context: facts and decisions about a project; task_instruction: how the "
                        "user wants a kind of task done; episodic: something that happened.")] = "episodic",
        scope: Annotated[ScopeName, Field(
            description="global: true everywhere; project: only within `project` (defaults to the active "
                        "project); task: only for `task_id` within the project.")] = "global",
        entity: Annotated[str | None, Field(description="What or whom it is about, dotted for a hierarchy: "
                                                        "'acme.billing', 'people.sam'.")] = None,
        project: Annotated[str | None, Field(description="The project it belongs to; defaults to the active "
                                                         "project for scope project/task.")] = None,
        task_id: Annotated[str | None, Field(description="Required for scope task.", max_length=200)] = None,
        # A list default is safe here: pydantic copies defaults for every call.
        tags: Annotated[list[str], Field(description="Short labels, at most 32.")] = [],  # noqa: B006
        status: Annotated[StatusName | None, Field(description="For things with a lifecycle: active, "
                                                               "completed, superseded, parked.")] = None,
        priority: Annotated[int, Field(ge=0, le=10, description="0 (default) to 10; higher ranks first.")] = 0,
        occurred_at: Annotated[str | None, Field(description="When it happened, ISO 8601: '2026-05-08' or "
                                                             "'2026-05-08T13:56:00Z'.")] = None,
        event_id: Annotated[str | None, Field(description="Optional UUID making retries safe: the same id "
                                                          "stores once and becomes the memory's id.")] = None,
        allow_duplicate: Annotated[bool, Field(description="Store even if a live memory already says the "
                                                           "same (by default that one is returned).")] = False,
        supersedes: Annotated[list[str], Field(description="Ids of older memories this one replaces: they "
                                                           "are marked superseded and leave retrieval.",
                                               max_length=20)] = [],  # noqa: B006
    ) -> StoredOut:
        """Remember something about the user for future conversations. Returns the stored memory.

        If a live memory already says the same, it is returned with duplicate_of set. Up to 3
        `similar` memories come back too: if one is now out of date, update_memory it or store with
        supersedes=[its id].

        Store facts the user states or confirms, decisions, preferences and notable events; not
        small talk, never secrets. Example: store_memory({"text": "We chose Postgres for billing.",
        "memory_type": "project_context", "scope": "project", "project": "acme"}).
        """
        caller = self._caller(ctx, WRITE_SCOPE)
        command = _command(StoreMemory, {
            "text": text, "memory_type": memory_type, "scope": scope, "entity": entity, "project": project,
            "task_id": task_id, "tags": tags, "status": status, "priority": priority,
            "occurred_at": occurred_at, "event_id": event_id, "allow_duplicate": allow_duplicate,
            "supersedes": supersedes,
        })
        result = await self._call(caller, self._service.store_memory, command)
        return StoredOut.of(result.memory, self._url(result.memory.id), duplicate_of=result.duplicate_of,
                            similar=[SimilarOut.of(m) for m in result.similar])

    async def retrieve_context(
        self,
        ctx: Context,
        query: Annotated[str, Field(description="What the answer is about, in natural language. Empty: the "
                                                "most relevant recent memories.", max_length=4096)] = "",
        memory_types: Annotated[list[MemoryTypeName] | None, Field(
            description="Only these types: core_identity, project_context, task_instruction, episodic.")] = None,
        scope: Annotated[ScopeName | None, Field(description="Only this scope: global, project or task.")] = None,
        project: Annotated[str | None, Field(description="Only this project (defaults to the active one).")] = None,
        task_id: Annotated[str | None, Field(description="Only this task.")] = None,
        entity: Annotated[str | None, Field(description="Only this entity and the ones below it.")] = None,
        tags: Annotated[list[str] | None, Field(description="Only memories carrying any of these tags.")] = None,
        status: Annotated[StatusName | None, Field(description="Only this status: active, completed, "
                                                               "superseded, parked.")] = None,
        limit: Annotated[int, Field(ge=1, le=50, description="How many memories, 1 to 50.")] = 10,
        recency_weight: Annotated[float, Field(ge=0.0, le=1.0, description="0 ranks by relevance only; 1 "
                                                                           "prefers recent memories.")] = 0.1,
        include_related: Annotated[bool, Field(description="Also return memories linked to each result.")] = False,
        as_of: Annotated[int | str | None, Field(description="Answer as the memory was at an event seq or an "
                                                             "ISO 8601 time: '2026-05-01T00:00:00Z'.")] = None,
        include_superseded: Annotated[bool, Field(description="Also return memories marked superseded "
                                                              "(left out by default).")] = False,
        min_score: Annotated[float | None, Field(ge=0.0, le=100.0, description=_MIN_SCORE)] = None,
    ) -> RetrievalOut:
        """Retrieve the memories relevant to what you are about to answer, ranked, with scores.

        Call it before answering whenever the user's history may matter: preferences, earlier
        decisions, people, ongoing projects. Long texts are shortened (text_truncated); fetch the
        id for the whole text. Example: retrieve_context({"query": "deployment decisions",
        "memory_types": ["project_context"], "limit": 5}).
        """
        caller = self._caller(ctx, READ_SCOPE)
        command = _command(RetrieveQuery, {
            "query": query, "memory_types": memory_types, "scope": scope, "project": project,
            "task_id": task_id, "entity": entity, "tags": tags, "status": status, "limit": limit,
            "recency_weight": recency_weight, "include_related": include_related, "as_of": as_of,
            "include_superseded": include_superseded, "min_score": min_score,
        })
        result = await self._call(caller, self._service.retrieve_context, command)
        return RetrievalOut(
            query=result.query, project=result.project, as_of_seq=result.as_of_seq,
            memories=[
                RetrievedMemoryOut.of(
                    r.memory, self._url(r.memory.id), MAX_TEXT_IN_LISTS, score=round(r.score, 6),
                    related=[self._memory(m, MAX_TEXT_IN_RELATED) for m in r.related],
                )
                for r in result.memories
            ],
            message=None if result.memories or not result.query else _NOTHING_RELEVANT,
        )

    async def set_project(
        self,
        project: Annotated[EntityName, Field(description="The project's name, e.g. 'acme' or 'acme.website'.")],
        ctx: Context,
    ) -> ProjectSummaryOut:
        """Make a project the active one for this user and client, and get its summary: memory
        counts by type and status, recent decisions, open tasks.

        Later calls default to it (store_memory with scope project, retrieve_context, sync_session).
        The project must exist: register_entity it or store a memory in it first; the error lists
        the known projects. Example: set_project({"project": "acme"}).
        """
        summary = await self._run(ctx, WRITE_SCOPE, self._service.set_project, project)
        return ProjectSummaryOut.of(summary, self._url, active=True)

    async def get_context_info(self, ctx: Context) -> ContextInfoOut:
        """Who the user is on this server and what their memory holds: the account, the active
        project, memory counts by type, known projects and top-level entities, plus the server and
        protocol versions. A cheap first call in a conversation. Takes no arguments."""
        principal = _principal(ctx)
        info = await self._run(ctx, READ_SCOPE, self._service.context_info)
        return ContextInfoOut.of(
            info, issuer=principal.identity.iss, client_id=principal.client_id, scopes=sorted(principal.scopes),
            server_version=server_version(), protocol_version=ctx.request_context.protocol_version,
        )

    async def link_memories(
        self,
        source_id: Annotated[str, Field(description="The memory the link starts from.", max_length=64)],
        target_id: Annotated[str, Field(description="The memory it points to.", max_length=64)],
        link_type: Annotated[LinkTypeName, Field(
            description="How source relates to target: supports, contradicts, supersedes, refines, "
                        "depends_on, implements, example_of.")],
        ctx: Context,
    ) -> LinkOut:
        """Record how two memories relate, e.g. a new decision that supersedes an old one.

        Example: link_memories({"source_id": "<new>", "target_id": "<old>", "link_type": "supersedes"}).
        retrieve_context with include_related returns linked memories together.
        """
        link = await self._run(ctx, WRITE_SCOPE, self._service.link, source_id, target_id, LinkType(link_type))
        return LinkOut(source_id=link.source_id, target_id=link.target_id, link_type=link.link_type.value)

    async def list_entities(
        self,
        ctx: Context,
        prefix: Annotated[str | None, Field(description="Only this entity and those below it, e.g. 'acme' "
                                                        "lists acme, acme.billing, ...")] = None,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="Page size, 1 to 100.")] = 50,
    ) -> EntityPageOut:
        """List the entities (people, projects, topics) the user's memories are about, by name,
        a page at a time. Example: list_entities({"prefix": "acme"}); then pass next_cursor as
        cursor until it is null."""
        page = await self._run(ctx, READ_SCOPE, self._service.list_entities, prefix, cursor, limit)
        return EntityPageOut.of(page)

    async def search_entities(
        self,
        query: Annotated[str, Field(description="A name or part of one; typos are tolerated.", min_length=1,
                                    max_length=200)],
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=50, description="How many, 1 to 50.")] = 10,
    ) -> EntitiesOut:
        """Find entities by name when you are unsure of the exact spelling or hierarchy.
        Example: search_entities({"query": "billing"}) finds acme.billing."""
        found = await self._run(ctx, READ_SCOPE, self._service.search_entities, query, limit)
        return EntitiesOut(entities=[EntityOut.of(e) for e in found])

    # -- changing and erasing ----------------------------------------------------------------

    async def delete_memory(
        self,
        id: Id,  # noqa: A002
        ctx: Context,
        reason: Annotated[str | None, Field(description="Why, for the record.", max_length=500)] = None,
    ) -> MemoryOut:
        """Delete a memory that is wrong or no longer wanted: it stops appearing in search and
        retrieval, but its history stays in the user's log (use forget_memory to erase it).
        Example: delete_memory({"id": "0196f1c2-...", "reason": "user moved to Berlin"})."""
        return self._memory(await self._run(ctx, WRITE_SCOPE, self._service.delete, id, reason))

    async def update_memory(
        self,
        id: Id,  # noqa: A002
        ctx: Context,
        text: Annotated[str | None, Field(description="New text (replaces the old).")] = None,
        memory_type: Annotated[MemoryTypeName | None, Field(
            description="New type: core_identity, project_context, task_instruction, episodic.")] = None,
        entity: Annotated[str | None, Field(description="New entity.")] = None,
        tags: Annotated[list[str] | None, Field(description="New tags (replace all old ones).")] = None,
        status: Annotated[StatusName | None, Field(description="New status: active, completed, superseded, "
                                                               "parked.")] = None,
        priority: Annotated[int | None, Field(ge=0, le=10, description="New priority, 0 to 10.")] = None,
        occurred_at: Annotated[str | None, Field(description="New time it happened, ISO 8601.")] = None,
        clear: Annotated[list[ClearableField], Field(
            description="Fields to empty: entity, status, occurred_at.")] = [],  # noqa: B006
        supersedes: Annotated[list[str] | None, Field(description="Ids of older memories this one now "
                                                                  "replaces: they are marked superseded.",
                                                      max_length=20)] = None,
    ) -> MemoryOut:
        """Correct or refine a memory in place; only the fields you give change. The previous
        version stays in the memory's history. Example: update_memory({"id": "0196f1c2-...",
        "status": "completed"}); to remove an entity: update_memory({"id": "...", "clear": ["entity"]})."""
        caller = self._caller(ctx, WRITE_SCOPE)
        given = {"text": text, "memory_type": memory_type, "entity": entity, "tags": tags, "status": status,
                 "priority": priority, "occurred_at": occurred_at, "supersedes": supersedes}
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        both = sorted(set(clear) & changes.keys())
        if both:
            raise ToolError(f"{', '.join(both)}: give a new value or clear it, not both")
        changes |= {field: None for field in clear}
        command = _command(UpdateMemory, changes) if changes else UpdateMemory()
        return self._memory(await self._call(caller, self._service.update, id, command))

    async def sync_session(
        self,
        ctx: Context,
        project: Annotated[str | None, Field(description="The project (defaults to the active one).")] = None,
        task_id: Annotated[str | None, Field(description="The task the session worked on.")] = None,
        decisions: Annotated[list[SessionItemIn], Field(description="Decisions made (added).")] = [],  # noqa: B006
        learnings: Annotated[list[SessionItemIn], Field(description="Things learned (added).")] = [],  # noqa: B006
        status_updates: Annotated[list[SessionItemIn], Field(
            description="Where things stand, one per entity (replaces that entity's last status).")] = [],  # noqa: B006
        feedback: Annotated[list[SessionItemIn], Field(
            description="How the user wants things done, one per entity (replaces the last).")] = [],  # noqa: B006
    ) -> SyncOut:
        """Record the outcome of a working session in one step, at its end: decisions, learnings,
        status updates and feedback, all at once.

        Example: sync_session({"project": "acme", "decisions": [{"text": "Ship v2 on June 1",
        "entity": "acme.release"}], "status_updates": [{"text": "QA half done", "entity": "acme.release"}]}).
        Give `supersedes` on an item to replace an older memory.
        """
        caller = self._caller(ctx, WRITE_SCOPE)
        command = _command(SyncSession, {
            "project": project, "task_id": task_id,
            "decisions": [i.model_dump() for i in decisions], "learnings": [i.model_dump() for i in learnings],
            "status_updates": [i.model_dump() for i in status_updates],
            "feedback": [i.model_dump() for i in feedback],
        })
        return SyncOut.of(await self._call(caller, self._service.sync_session, command))

    async def register_entity(
        self,
        name: EntityName,
        ctx: Context,
        description: Annotated[str | None, Field(description="What it is, in a sentence.")] = None,
        parent: Annotated[str | None, Field(description="The entity it belongs under, e.g. 'acme' for "
                                                        "'acme.billing'.")] = None,
    ) -> EntityOut:
        """Register a person, project or topic so memories can be filed under it and set_project
        can select it. Registering again updates the description.
        Example: register_entity({"name": "acme", "description": "Client: Acme Corp website"})."""
        return EntityOut.of(await self._run(ctx, WRITE_SCOPE, self._service.register_entity, name, description,
                                            parent))

    async def forget_memory(self, id: Id, ctx: Context) -> ForgetOut:  # noqa: A002
        """Erase a memory completely: its text is removed from the log and every index, leaving only
        a record that something was forgotten. Cannot be undone. Use only when the user asks to
        forget or erase something; otherwise prefer delete_memory. Example: forget_memory({"id": "..."})."""
        return ForgetOut.of(await self._run(ctx, WRITE_SCOPE, self._service.forget, id))

    async def memory_history(
        self,
        id: Id,  # noqa: A002
        ctx: Context,
        cursor: Annotated[int | None, Field(ge=0, description="next_cursor from the previous page.")] = None,
        limit: Annotated[int, Field(ge=1, le=50, description="Events per page, 1 to 50.")] = 20,
    ) -> HistoryPageOut:
        """The events of one memory, oldest first: when it was stored, changed, linked, read (and
        by which client), deleted or forgotten. Use it to answer "when did I tell you this?" or
        "who changed this?". Example: memory_history({"id": "0196f1c2-..."})."""
        page = await self._run(ctx, READ_SCOPE, self._service.history, id, cursor or 0, limit)
        return HistoryPageOut.of(page)


_TITLES = {
    "search": "Search memories", "fetch": "Fetch a memory", "store_memory": "Remember something",
    "retrieve_context": "Retrieve relevant memories", "set_project": "Set the active project",
    "get_context_info": "Who am I, what is remembered", "link_memories": "Link two memories",
    "list_entities": "List entities", "search_entities": "Find entities", "delete_memory": "Delete a memory",
    "update_memory": "Update a memory", "sync_session": "Save a session's outcome",
    "register_entity": "Register an entity", "forget_memory": "Erase a memory for good",
    "memory_history": "A memory's history",
}
TOOL_NAMES = tuple(_TITLES)
_ERASING = frozenset({"delete_memory", "forget_memory"})
#: The tool list changes only with a new server version, and is the same for everybody.
_LISTING_TTL_MS = 3_600_000


def _icon_kind(tool: str) -> IconKind:
    return "read" if tool in READ_ONLY_TOOLS else "erase" if tool in _ERASING else "write"


def _description(fn: Callable[..., Any]) -> str:
    """The docstring without its source indentation and line wrapping: every byte of it lands in a
    model's context, and a host reflows the text itself."""
    paragraphs = inspect.cleandoc(fn.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def build_mcp_server(service: MemoryService, settings: ServerSettings, tally: ToolCallTally | None = None) -> MCPServer:
    server = MCPServer(name="memory", title="Memory", version=server_version(), instructions=INSTRUCTIONS,
                       website_url=settings.base_url, icons=icons(settings.base_url, "memory"), log_level="WARNING",
                       extensions=[widget_extension()] if settings.widget else None,
                       cache_hints={"tools/list": CacheHint(ttl_ms=_LISTING_TTL_MS, scope="public"),
                                    "server/discover": CacheHint(ttl_ms=_LISTING_TTL_MS, scope="public")})
    tools = _MemoryTools(service, settings)
    for name, title in _TITLES.items():
        read_only = name in READ_ONLY_TOOLS
        method = getattr(tools, name)
        server.add_tool(
            instrument_tool(name, method, tally), name=name, title=title, description=_description(method),
            structured_output=True, icons=icons(settings.base_url, _icon_kind(name)),
            meta=widget_tool_meta(name) if settings.widget else None,
            annotations=ToolAnnotations(
                title=title, read_only_hint=read_only, destructive_hint=name in DESTRUCTIVE_TOOLS,
                idempotent_hint=read_only or name in _IDEMPOTENT_WRITES, open_world_hint=False,
            ),
        )
    return server
