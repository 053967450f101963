"""The MCP tools: one thin adapter per service operation, for an assistant to call.

Each tool is a method marked `@tool`: it takes the caller's `Context` and its arguments as a
msgspec struct (memory/server/mcp_models.py; the struct is its inputSchema) and returns a struct
(its outputSchema). It finds the caller's `Principal` on the HTTP request the SDK hands it, checks
the scope its operation needs, runs the (blocking) service call in a worker thread and turns
domain errors into tool errors (`isError: true`) a person can read.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import msgspec
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from memory.commands import RetrieveQuery, StoreMemory, SyncSession, UpdateMemory
from memory.errors import LogIntegrityError, MemoryServiceError, StorageError
from memory.model import Entity, Link
from memory.server.auth import PRINCIPAL_SCOPE_KEY, READ_SCOPE, WRITE_SCOPE, Principal
from memory.server.icons import IconKind, icons
from memory.server.mcp_models import (
    MAX_TEXT_IN_LISTS,
    MAX_TEXT_IN_RELATED,
    ContextInfoOut,
    DeleteArgs,
    EntitiesOut,
    EntityPageOut,
    FetchedMemory,
    ForgetOut,
    HistoryArgs,
    HistoryPageOut,
    IdArgs,
    LinkArgs,
    ListEntitiesArgs,
    MemoryOut,
    NoArguments,
    ProjectArgs,
    ProjectSummaryOut,
    RegisterEntityArgs,
    RetrievalOut,
    RetrieveArgs,
    RetrievedMemoryOut,
    SearchArgs,
    SearchEntitiesArgs,
    SearchResult,
    SearchResults,
    SimilarOut,
    StoredOut,
    SyncOut,
    UpdateArgs,
)
from memory.server.mcp_registry import build_tool, tool, tool_specs
from memory.server.metrics import ToolCallTally, instrument_tool
from memory.server.request_ids import request_id_of
from memory.server.settings import ServerSettings, server_version
from memory.server.widget import widget_extension, widget_tool_meta
from memory.service import Caller, MemoryService

__all__ = ["build_mcp_server", "TOOL_NAMES", "READ_ONLY_TOOLS", "DESTRUCTIVE_TOOLS"]

_T = TypeVar("_T")

_SEARCH_LIMIT = 10
_NOTHING_RELEVANT = ("No stored memory is relevant to this query (all scored under the relevance floor). "
                     "Pass min_score: 0 to get the closest memories anyway.")

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

def _request_id(ctx: Context) -> str | None:
    request = ctx.request_context.request
    return request_id_of(request.scope) if request is not None else None


def _principal(ctx: Context) -> Principal:
    request = ctx.request_context.request
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY) if request is not None else None
    if not isinstance(principal, Principal):
        # The auth middleware guards /mcp, so this means the server was wired wrongly.
        raise ToolError("this connection is not authenticated")
    return principal


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
        """The caller, if their token grants `needs`."""
        principal = _principal(ctx)
        if not principal.may(needs):
            verb = "change" if needs == WRITE_SCOPE else "read"
            raise ToolError(f"this connection may not {verb} memories: its token lacks the {needs!r} scope "
                            f"(it has: {' '.join(sorted(principal.scopes)) or 'none'})")
        return Caller(principal.identity, principal.client_id, _request_id(ctx))

    async def _run(self, ctx: Context, needs: str, operation: Callable[..., _T], *args: Any) -> _T:
        try:
            return await anyio.to_thread.run_sync(functools.partial(operation, self._caller(ctx, needs), *args))
        except MemoryServiceError as exc:
            raise ToolError(_explained(exc)) from None

    def _url(self, memory_id: str) -> str:
        return self._settings.memory_url(memory_id)

    def _memory(self, memory: Any, max_text: int | None = None) -> MemoryOut:
        return MemoryOut.of(memory, self._url(memory.id), max_text)

    # -- the ChatGPT pair ---------------------------------------------------------------------

    @tool("Search memories", read_only=True)
    async def search(self, ctx: Context, arguments: SearchArgs) -> SearchResults:
        """Search the user's memories; returns ids, titles and urls to `fetch`.

        Use it to find what the user told you before. Matches by meaning, not only by words.
        Example: search({"query": "how does Sam like meeting notes"}).
        For filters (type, project, tags), whole texts and scores use retrieve_context instead.
        """
        hits = await self._run(ctx, READ_SCOPE, self._service.search, arguments.query, _SEARCH_LIMIT,
                               arguments.min_score)
        # ChatGPT's contract is `results` alone: an empty list is how nothing relevant is said here.
        return SearchResults(results=[SearchResult(id=h.id, title=h.title, url=self._url(h.id)) for h in hits])

    @tool("Fetch a memory", read_only=True)
    async def fetch(self, ctx: Context, arguments: IdArgs) -> FetchedMemory:
        """Fetch one memory by id: its whole text, its url, and its metadata (type, scope, project,
        entity, tags, status, priority, dates, links).

        Example: fetch({"id": "0196f1c2-..."}) with an id from search.
        """
        memory = await self._run(ctx, READ_SCOPE, self._service.get, arguments.id)
        return FetchedMemory.of(memory, self._url(memory.id))

    # -- remembering -------------------------------------------------------------------------

    @tool("Remember something")
    async def store_memory(self, ctx: Context, arguments: StoreMemory) -> StoredOut:
        """Remember something about the user for future conversations. Returns the stored memory.

        If a live memory already says the same, it is returned with duplicate_of set. Up to 3
        `similar` memories come back too: if one is now out of date, update_memory it or store with
        supersedes=[its id].

        Store facts the user states or confirms, decisions, preferences and notable events; not
        small talk, never secrets. Example: store_memory({"text": "We chose Postgres for billing.",
        "memory_type": "project_context", "scope": "project", "project": "acme"}).
        """
        result = await self._run(ctx, WRITE_SCOPE, self._service.store_memory, arguments)
        return StoredOut.of(result.memory, self._url(result.memory.id), duplicate_of=result.duplicate_of,
                            similar=[SimilarOut.of(m) for m in result.similar])

    @tool("Retrieve relevant memories", read_only=True)
    async def retrieve_context(self, ctx: Context, arguments: RetrieveArgs) -> RetrievalOut:
        """Retrieve the memories relevant to what you are about to answer, ranked, with scores.

        Call it before answering whenever the user's history may matter: preferences, earlier
        decisions, people, ongoing projects. Long texts are shortened (text_truncated); fetch the
        id for the whole text. Example: retrieve_context({"query": "deployment decisions",
        "memory_types": ["project_context"], "limit": 5}).
        """
        query = RetrieveQuery(**{f: getattr(arguments, f) for f in RetrieveQuery.__struct_fields__})
        result = await self._run(ctx, READ_SCOPE, self._service.retrieve_context, query)
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

    @tool("Set the active project", idempotent=True)
    async def set_project(self, ctx: Context, arguments: ProjectArgs) -> ProjectSummaryOut:
        """Make a project the active one for this user and client, and get its summary: memory
        counts by type and status, recent decisions, open tasks.

        Later calls default to it (store_memory with scope project, retrieve_context, sync_session).
        The project must exist: register_entity it or store a memory in it first; the error lists
        the known projects. Example: set_project({"project": "acme"}).
        """
        summary = await self._run(ctx, WRITE_SCOPE, self._service.set_project, arguments.project)
        return ProjectSummaryOut.of(summary, self._url, active=True)

    @tool("Who am I, what is remembered", read_only=True)
    async def get_context_info(self, ctx: Context, arguments: NoArguments) -> ContextInfoOut:
        """Who the user is on this server and what their memory holds: the account, the active
        project, memory counts by type, known projects and top-level entities, plus the server and
        protocol versions. A cheap first call in a conversation. Takes no arguments."""
        principal = _principal(ctx)
        info = await self._run(ctx, READ_SCOPE, self._service.context_info)
        return ContextInfoOut.of(
            info, issuer=principal.identity.iss, client_id=principal.client_id, scopes=sorted(principal.scopes),
            server_version=server_version(), protocol_version=ctx.request_context.protocol_version,
        )

    @tool("Link two memories", idempotent=True)
    async def link_memories(self, ctx: Context, arguments: LinkArgs) -> Link:
        """Record how two memories relate, e.g. a new decision that supersedes an old one.

        Example: link_memories({"source_id": "<new>", "target_id": "<old>", "link_type": "supersedes"}).
        retrieve_context with include_related returns linked memories together.
        """
        return await self._run(ctx, WRITE_SCOPE, self._service.link, arguments.source_id, arguments.target_id,
                               arguments.link_type)

    @tool("List entities", read_only=True)
    async def list_entities(self, ctx: Context, arguments: ListEntitiesArgs) -> EntityPageOut:
        """List the entities (people, projects, topics) the user's memories are about, by name,
        a page at a time. Example: list_entities({"prefix": "acme"}); then pass next_cursor as
        cursor until it is null."""
        page = await self._run(ctx, READ_SCOPE, self._service.list_entities, arguments.prefix, arguments.cursor,
                               arguments.limit)
        return EntityPageOut(entities=page.entities, next_cursor=page.next_cursor)

    @tool("Find entities", read_only=True)
    async def search_entities(self, ctx: Context, arguments: SearchEntitiesArgs) -> EntitiesOut:
        """Find entities by name when you are unsure of the exact spelling or hierarchy.
        Example: search_entities({"query": "billing"}) finds acme.billing."""
        found = await self._run(ctx, READ_SCOPE, self._service.search_entities, arguments.query, arguments.limit)
        return EntitiesOut(entities=found)

    # -- changing and erasing ----------------------------------------------------------------

    @tool("Delete a memory", destructive=True, idempotent=True)
    async def delete_memory(self, ctx: Context, arguments: DeleteArgs) -> MemoryOut:
        """Delete a memory that is wrong or no longer wanted: it stops appearing in search and
        retrieval, but its history stays in the user's log (use forget_memory to erase it).
        Example: delete_memory({"id": "0196f1c2-...", "reason": "user moved to Berlin"})."""
        return self._memory(await self._run(ctx, WRITE_SCOPE, self._service.delete, arguments.id,
                                            arguments.reason))

    @tool("Update a memory", destructive=True, idempotent=True, null_is_unset=True)
    async def update_memory(self, ctx: Context, arguments: UpdateArgs) -> MemoryOut:
        """Correct or refine a memory in place; only the fields you give change. The previous
        version stays in the memory's history. Example: update_memory({"id": "0196f1c2-...",
        "status": "completed"}); to remove an entity: update_memory({"id": "...", "clear": ["entity"]})."""
        changes = {f: getattr(arguments, f) for f in UpdateMemory.__struct_fields__
                   if getattr(arguments, f) is not msgspec.UNSET}
        both = sorted(set(arguments.clear) & changes.keys())
        if both:
            raise ToolError(f"{', '.join(both)}: give a new value or clear it, not both")
        command = UpdateMemory(**changes | {field: None for field in arguments.clear})
        return self._memory(await self._run(ctx, WRITE_SCOPE, self._service.update, arguments.id, command))

    @tool("Save a session's outcome")
    async def sync_session(self, ctx: Context, arguments: SyncSession) -> SyncOut:
        """Record the outcome of a working session in one step, at its end: decisions, learnings,
        status updates and feedback, all at once.

        Example: sync_session({"project": "acme", "decisions": [{"text": "Ship v2 on June 1",
        "entity": "acme.release"}], "status_updates": [{"text": "QA half done", "entity": "acme.release"}]}).
        Give `supersedes` on an item to replace an older memory.
        """
        return SyncOut.of(await self._run(ctx, WRITE_SCOPE, self._service.sync_session, arguments))

    @tool("Register an entity", idempotent=True)
    async def register_entity(self, ctx: Context, arguments: RegisterEntityArgs) -> Entity:
        """Register a person, project or topic so memories can be filed under it and set_project
        can select it. Registering again updates the description.
        Example: register_entity({"name": "acme", "description": "Client: Acme Corp website"})."""
        return await self._run(ctx, WRITE_SCOPE, self._service.register_entity, arguments.name,
                               arguments.description, arguments.parent)

    @tool("Erase a memory for good", destructive=True, idempotent=True)
    async def forget_memory(self, ctx: Context, arguments: IdArgs) -> ForgetOut:
        """Erase a memory completely: its text is removed from the log and every index, leaving only
        a record that something was forgotten. Cannot be undone. Use only when the user asks to
        forget or erase something; otherwise prefer delete_memory. Example: forget_memory({"id": "..."})."""
        return ForgetOut.of(await self._run(ctx, WRITE_SCOPE, self._service.forget, arguments.id))

    @tool("A memory's history", read_only=True)
    async def memory_history(self, ctx: Context, arguments: HistoryArgs) -> HistoryPageOut:
        """The events of one memory, oldest first: when it was stored, changed, linked, read (and
        by which client), deleted or forgotten. Use it to answer "when did I tell you this?" or
        "who changed this?". Example: memory_history({"id": "0196f1c2-..."})."""
        page = await self._run(ctx, READ_SCOPE, self._service.history, arguments.id, arguments.cursor or 0,
                               arguments.limit)
        return HistoryPageOut.of(page)


_SPECS = tool_specs(_MemoryTools)
TOOL_NAMES = tuple(spec.name for spec in _SPECS)
READ_ONLY_TOOLS = frozenset(spec.name for spec in _SPECS if spec.read_only)
DESTRUCTIVE_TOOLS = frozenset(spec.name for spec in _SPECS if spec.destructive)
_ERASING = frozenset({"delete_memory", "forget_memory"})
#: The tool list changes only with a new server version, and is the same for everybody.
_LISTING_TTL_MS = 3_600_000


def _icon_kind(tool_name: str) -> IconKind:
    return "read" if tool_name in READ_ONLY_TOOLS else "erase" if tool_name in _ERASING else "write"


def build_mcp_server(service: MemoryService, settings: ServerSettings, tally: ToolCallTally | None = None) -> MCPServer:
    tools = _MemoryTools(service, settings)
    return MCPServer(
        name="memory", title="Memory", version=server_version(), instructions=INSTRUCTIONS,
        website_url=settings.base_url, icons=icons(settings.base_url, "memory"), log_level="WARNING",
        extensions=[widget_extension()] if settings.widget else None,
        cache_hints={"tools/list": CacheHint(ttl_ms=_LISTING_TTL_MS, scope="public"),
                     "server/discover": CacheHint(ttl_ms=_LISTING_TTL_MS, scope="public")},
        tools=[
            build_tool(spec, functools.partial(spec.fn, tools),
                       lambda name, fn: instrument_tool(name, fn, tally),
                       icons=icons(settings.base_url, _icon_kind(spec.name)),
                       meta=widget_tool_meta(spec.name) if settings.widget else None)
            for spec in _SPECS
        ],
    )
