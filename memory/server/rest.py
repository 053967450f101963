"""The REST API at /api/v1: the same service operations as the MCP tools, for scripts and Custom GPTs.

Bodies are the domain's own msgspec commands (Litestar validates them; garbage is a 400 naming the
field); answers are the domain's result structs. Handlers are sync and run in Litestar's worker
threads, because the service blocks.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import PermissionDeniedException, SerializationException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.params import JSONBody, Parameter, QueryParameter
from litestar.response import File

from memory.commands import StoreMemory, UpdateMemory
from memory.errors import (
    IdempotencyConflict,
    InvalidInput,
    LogIntegrityError,
    MemoryServiceError,
    NotFound,
    StorageError,
)
from memory.model import Memory, MemoryType, Scope
from memory.results import EntityPage, ForgetResult, HistoryPage, ImportReport, MemoryPage, SearchHit, StoredMemory
from memory.server.auth import PRINCIPAL_SCOPE_KEY, READ_SCOPE, WRITE_SCOPE, Principal, insufficient_scope_challenge
from memory.server.request_ids import request_id_of
from memory.server.settings import ServerSettings
from memory.service import Caller, MemoryService
from memory.validation import MAX_DEPTH, check_text_fields

__all__ = ["build_rest_controller", "domain_error_response", "SearchResponse", "ErrorBody"]

#: Domain errors as HTTP statuses. Order matters only for subclasses (none today).
_STATUS: tuple[tuple[type[MemoryServiceError], int], ...] = (
    (InvalidInput, 400),
    (NotFound, 404),
    (IdempotencyConflict, 409),
    (LogIntegrityError, 503),
    (StorageError, 507),
)


class SearchResponse(msgspec.Struct, kw_only=True):
    results: list[SearchHit]


class ImportRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: str
    data: str


class ErrorBody(msgspec.Struct, kw_only=True):
    status_code: int
    error: str
    detail: str


def domain_error_response(_: Request, exc: MemoryServiceError) -> Response[ErrorBody]:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
    return Response(ErrorBody(status_code=status, error=exc.code, detail=str(exc)), status_code=status)


def _principal(connection: ASGIConnection) -> Principal:
    principal = connection.scope.get(PRINCIPAL_SCOPE_KEY)  # type: ignore[call-overload]
    # The auth middleware sits on this router; without a principal the wiring is wrong, not the caller.
    assert isinstance(principal, Principal), "BearerAuthMiddleware must guard the REST router"
    return principal


def _requires(scope: str, resource_metadata_url: str):
    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal = _principal(connection)
        if not principal.may(scope):
            raise PermissionDeniedException(
                detail=f"this token lacks the {scope!r} scope (it has: {' '.join(sorted(principal.scopes)) or 'none'})",
                headers={"WWW-Authenticate": insufficient_scope_challenge(scope, resource_metadata_url)},
            )

    return guard


def _caller(request: Request) -> Caller:
    principal = _principal(request)
    return Caller(principal.identity, principal.client_id, request_id_of(request.scope))


class _CheckedRequest(Request):
    """A request whose JSON body is refused, as a 400 naming the field, when it nests deeper than
    MAX_DEPTH or holds a string that is not text: the same check every MCP argument passes."""

    async def json(self):
        try:
            body = await super().json()
        except RecursionError:
            raise InvalidInput(f"the JSON body nests more than {MAX_DEPTH} levels deep") from None
        except SerializationException as refused:
            # msgspec refuses an escaped lone surrogate (\\ud800) without saying where; the
            # stdlib decodes it, so the check can name the field.
            try:
                lenient = json.loads(await self.body())
            except (ValueError, RecursionError):
                raise refused from None
            check_text_fields(lenient, "")
            raise
        check_text_fields(body, "")
        return body


Service = NamedDependency[MemoryService]
CallerDep = NamedDependency[Caller]
MemoryId = Annotated[str, Parameter(description="A memory id.", max_length=64)]
Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size, 1 to 100.")]


class MemoriesController(Controller):
    tags = ["memories"]

    @post("/memories", operation_id="storeMemory", summary="Store a memory", sync_to_thread=True,
          opt={"needs": WRITE_SCOPE})
    def store(self, data: JSONBody[StoreMemory], service: Service, caller: CallerDep) -> Response[StoredMemory]:
        """Remember something. With `event_id` (a UUID) a retry stores once; the id becomes the memory's id.

        When a live memory of the same entity, scope and project already says the same, nothing
        is stored: the answer (200 instead of 201) is that memory, with `duplicate_of` naming it;
        `allow_duplicate: true` stores anyway. `similar` lists up to 3 close live memories, to
        update one instead. `supersedes` (ids) marks older memories superseded by this one."""
        result = service.store_memory(caller, data)
        return Response(StoredMemory.of(result), status_code=200 if result.duplicate_of else 201)

    @get("/memories", operation_id="listMemories", summary="List memories", sync_to_thread=True,
         opt={"needs": READ_SCOPE})
    def list_memories(
        self, service: Service, caller: CallerDep,
        memory_type: Annotated[MemoryType | None, Parameter(description="Only this type.")] = None,
        # `scope` is Litestar's reserved name for the ASGI scope, hence the alias.
        in_scope: Annotated[Scope | None, QueryParameter(name="scope", description="Only this scope.")] = None,
        project: Annotated[str | None, Parameter(description="Only this project.", max_length=200)] = None,
        entity: Annotated[str | None, Parameter(description="Only this entity and those below it.",
                                                max_length=200)] = None,
        tag: Annotated[str | None, Parameter(description="Only memories with this tag.", max_length=64)] = None,
        cursor: Annotated[int | None, Parameter(ge=1, description="next_cursor of the previous page.")] = None,
        limit: Limit = 20,
    ) -> MemoryPage:
        """The caller's live memories, most recently changed first, filtered exactly (as on the web page)."""
        return service.list_memories(caller, memory_type=memory_type, scope=in_scope, project=project, entity=entity,
                                     tag=tag, cursor=cursor, limit=limit)

    @post("/import", operation_id="importMemories", summary="Import memories from another tool",
          sync_to_thread=True, status_code=200, opt={"needs": WRITE_SCOPE})
    def import_memories(self, data: JSONBody[ImportRequest], service: Service, caller: CallerDep) -> ImportReport:
        """Another tool's export (`format`: server-memory, mem0, jsonl or export; `data`: the file's
        text) as memories of the caller: all of it or, on a bad record, nothing (400 naming it).
        Importing the same file again adds nothing; duplicates of live memories are reported."""
        # A lone surrogate cannot be UTF-8: kept as is, it makes the file "not UTF-8 text" (a 400).
        return service.import_memories(caller, data.format, data.data.encode("utf-8", "surrogatepass"))

    @get("/memories/search", operation_id="searchMemories", summary="Search memories", sync_to_thread=True,
         opt={"needs": READ_SCOPE})
    def search(self, service: Service, caller: CallerDep,
               # `query` is Litestar's reserved name for the whole query string, hence the alias.
               text: Annotated[str, QueryParameter(name="query", description="What to look for.", max_length=4096)],
               limit: Annotated[int, Parameter(ge=1, le=100, description="How many hits, 1 to 100.")] = 10,
               min_score: Annotated[float | None, Parameter(
                   ge=0.0, le=100.0, description="Leave out memories scoring under this; default the relevance "
                                                 "floor (a query about nothing stored finds none), 0 none.")] = None,
               ) -> SearchResponse:
        """Memories matching a query by meaning and words, best first: ids, titles and snippets."""
        return SearchResponse(results=service.search(caller, text, limit, min_score))

    @get("/memories/{memory_id:str}", operation_id="getMemory", summary="Get a memory", sync_to_thread=True,
         opt={"needs": READ_SCOPE})
    def fetch(self, memory_id: MemoryId, service: Service, caller: CallerDep) -> Memory:
        """One memory, whole. Ids of other users are not found, like ids that never existed."""
        return service.get(caller, memory_id)

    @patch("/memories/{memory_id:str}", operation_id="updateMemory", summary="Update a memory",
           sync_to_thread=True, opt={"needs": WRITE_SCOPE})
    def update(self, memory_id: MemoryId, data: JSONBody[UpdateMemory], service: Service,
               caller: CallerDep) -> Memory:
        """Change the fields given; `null` clears entity, status or occurred_at. History keeps the old version."""
        return service.update(caller, memory_id, data)

    @delete("/memories/{memory_id:str}", operation_id="deleteMemory", summary="Delete or forget a memory",
            status_code=200, sync_to_thread=True, opt={"needs": WRITE_SCOPE})
    def remove(self, memory_id: MemoryId, service: Service, caller: CallerDep,
               forget: Annotated[bool, Parameter(description="Erase it for good (its text leaves the log and "
                                                             "every index) instead of a soft delete.")] = False,
               reason: Annotated[str | None, Parameter(description="Why, for the record (soft delete).",
                                                       max_length=500)] = None,
               ) -> Memory | ForgetResult:
        """Soft delete (the memory leaves search but stays in its history), or with `forget=true` erasure."""
        if forget:
            return service.forget(caller, memory_id)
        return service.delete(caller, memory_id, reason)

    @post("/memories/{memory_id:str}/restore", operation_id="restoreMemory", summary="Restore a deleted memory",
          status_code=200, sync_to_thread=True, opt={"needs": WRITE_SCOPE})
    def restore(self, memory_id: MemoryId, service: Service, caller: CallerDep) -> Memory:
        """Undo a soft delete: the memory is live again; its history shows the delete and the restore."""
        return service.restore(caller, memory_id)

    @get("/memories/{memory_id:str}/history", operation_id="memoryHistory", summary="A memory's events",
         sync_to_thread=True, opt={"needs": READ_SCOPE})
    def history(self, memory_id: MemoryId, service: Service, caller: CallerDep,
                cursor: Annotated[int, Parameter(ge=0, description="next_cursor of the previous page.")] = 0,
                limit: Limit = 20) -> HistoryPage:
        """The events of one memory, oldest first, a page at a time."""
        return service.history(caller, memory_id, cursor, limit)

    @get("/entities", operation_id="listEntities", summary="List entities", sync_to_thread=True,
         opt={"needs": READ_SCOPE})
    def entities(self, service: Service, caller: CallerDep,
                 prefix: Annotated[str | None, Parameter(description="Only this entity and those below it.",
                                                         max_length=200)] = None,
                 cursor: Annotated[str | None, Parameter(description="next_cursor of the previous page.",
                                                         max_length=200)] = None,
                 limit: Limit = 50) -> EntityPage:
        """The entities the caller's memories are about, by name."""
        return service.list_entities(caller, prefix, cursor, limit)

    @get("/export", operation_id="exportMemories", summary="Export your memory log", sync_to_thread=True,
         media_type="application/json", opt={"needs": READ_SCOPE})
    def export(self, service: Service, caller: CallerDep) -> File:
        """The caller's whole log as a signed bundle that `memory verify-export` checks offline."""
        fd, name = tempfile.mkstemp(prefix="export-", suffix=".json")
        os.close(fd)
        path = Path(name)
        try:
            service.export(caller, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return File(path, filename="memory-export.json", media_type="application/json",
                    background=BackgroundTask(path.unlink, missing_ok=True))


def build_rest_controller(service: MemoryService, settings: ServerSettings,
                          middleware: list[DefineMiddleware]) -> type[Controller]:
    """The API mounted at /api/v1, bound to one service. (A class rather than a Router: Litestar
    deep-copies routers, and the service holds locks and open databases.)"""
    guards = {scope: _requires(scope, settings.resource_metadata_url) for scope in (READ_SCOPE, WRITE_SCOPE)}

    def scope_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        guards[handler.opt["needs"]](connection, handler)

    return type("MemoryAPI", (MemoriesController,), {
        "path": "/api/v1",
        "middleware": middleware,
        "request_class": _CheckedRequest,
        "guards": [scope_guard],
        "dependencies": {
            "service": Provide(lambda: service, use_cache=True, sync_to_thread=False),
            "caller": Provide(_caller, sync_to_thread=False),
        },
        "security": [{"oauth2": [READ_SCOPE, WRITE_SCOPE]}, {"bearer": []}],
    })
