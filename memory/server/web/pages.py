"""The signed-in person's pages: their memories, one memory, the timeline of their log, and the
apps they connected. Every page goes through `MemoryService` as a caller of client "web", so what
the person does here lands in their log like what an assistant does.

Handlers are sync and run in Litestar's worker threads, because the service blocks.
"""

import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath, FromQuery, QueryParameter, URLEncodedBody
from litestar.response import File, Redirect, Template

from memory.commands import RetrieveQuery, StoreMemory, UpdateMemory
from memory.errors import InvalidInput, MemoryServiceError, NotFound
from memory.identity import LOCAL_ISSUER, Identity
from memory.model import Memory, MemoryType, Scope
from memory.results import HistoryEntry
from memory.server.logs import account_hash, log_fields
from memory.server.oauth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password, password_matches
from memory.server.oauth.storage import AuthStore
from memory.server.request_ids import request_id_of
from memory.server.settings import ServerSettings
from memory.server.web.session import sign_in, sign_out, signed_in
from memory.service import Caller, MemoryService

__all__ = ["build_pages", "build_external_idp_page", "WEB_CLIENT_ID"]

logger = logging.getLogger("memory.server.web")

#: The client id the person's own actions carry in their log.
WEB_CLIENT_ID = "web"

_PAGE = 20
_TIMELINE_PAGE = 50
_MAX_SEARCH = 100
# A wrong account name costs as long as a wrong password (the OAuth login does the same).
_DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
_NO_STORE = {"Cache-Control": "no-store"}
_NOTICES = {
    "updated": "Saved.",
    "deleted": "Deleted. It no longer shows in search; its history stays in your timeline.",
    "forgotten": "Forgotten. Its text is gone from your log and from every index.",
    "stored": "Stored.",
    "restored": "Restored. It shows in search again.",
    "duplicate": "Already in your memory: this is the memory that says it. Nothing new was stored.",
    "revoked": "Access revoked. That app must be connected again to reach your memory.",
    "token_revoked": "Token revoked. Whatever used it needs a new one from `memory token`.",
    "password": "Password changed. Every other place you were signed in is signed out.",
}


class _SignInRequired(NotAuthorizedException):
    """Answered with a redirect to the login form (see `_html_errors`)."""


class _LoginForm(msgspec.Struct):
    username: str = ""
    password: str = ""
    next: str = "/"


class _EditForm(msgspec.Struct):
    text: str = ""
    tags: str = ""


class _AddForm(msgspec.Struct):
    text: str = ""
    tags: str = ""
    memory_type: str = ""


class _ForgetForm(msgspec.Struct):
    confirm: str = ""


class _PasswordForm(msgspec.Struct):
    current: str = ""
    new: str = ""
    confirm: str = ""


# Litestar parses and validates the forms; `_csrf_token` is one more field, ignored here.
_Login, _Edit, _Forget = URLEncodedBody[_LoginForm], URLEncodedBody[_EditForm], URLEncodedBody[_ForgetForm]
_Password, _Add = URLEncodedBody[_PasswordForm], URLEncodedBody[_AddForm]
_User = NamedDependency[str]
_Next = Annotated[str | None, QueryParameter(name="next")]
# `scope` is Litestar's name for the ASGI scope, hence the alias.
_ScopeParam = Annotated[str, QueryParameter(name="scope")]


def _page(name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> Template:
    return Template(template_name=name, context=context, status_code=status, headers={**_NO_STORE, **(headers or {})})


def _safe_next(value: str | None) -> str:
    # Only a path on this site: anything else would make the login form an open redirect.
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or urlsplit(value).scheme:
        return "/"
    return value


def _choice(kind: type, value: str | None, what: str) -> Any:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidInput(f"unknown {what} {value!r}") from None


def _tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _when(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") + " UTC" if stamp else ""


def _describe(entry: HistoryEntry) -> dict[str, Any]:
    """One event as a line a person reads: what happened, to which memory."""
    payload = entry.payload or {}
    memory_id = payload.get("memory_id") or payload.get("source_id")
    if entry.redacted:
        # The header (type, time, client) is signed and stays; only the payload is gone.
        what, detail = "redacted (forgotten)", entry.type
    elif entry.type == "memory.stored":
        what, detail = "stored", payload.get("text", "")[:200]
    elif entry.type == "memory.updated":
        changed = [k for k in payload if k not in ("memory_id", "type")]
        what, detail = "changed", ", ".join(changed) + (f": {payload['text'][:200]}" if "text" in payload else "")
    elif entry.type == "memory.deleted":
        what, detail = "deleted", payload.get("reason") or ""
    elif entry.type == "memory.restored":
        what, detail = "restored", ""
    elif entry.type == "memory.deduplicated":
        what, detail = "not stored again (duplicate)", f"{payload.get('match')} match, {payload.get('score')}"
    elif entry.type == "memory.forgotten":
        what, detail = "forgot", f"{len(payload.get('redacted_seqs', []))} events redacted"
    elif entry.type == "memories.linked":
        what, detail = "linked", f"{payload.get('link_type')} → {payload.get('target_id')}"
    elif entry.type == "entity.registered":
        what, detail = "registered entity", payload.get("name", "")
    elif entry.type == "project.set":
        what, detail = "set project", payload.get("project", "")
    elif entry.type == "memories.read":
        query = payload.get("query")
        what = f"read ({payload.get('operation', '?')})"
        detail = (f"“{query}” " if query else "") + f"{payload.get('returned_count', 0)} returned"
    else:
        what, detail = entry.type, ""
    # A forgotten memory has no page left to link to.
    linkable = memory_id is not None and not entry.redacted and entry.type != "memory.forgotten"
    return {"seq": entry.seq, "when": _when(entry.recorded_at), "client": entry.client_id or "?", "what": what,
            "detail": detail, "memory_id": memory_id if linkable else None, "redacted": entry.redacted}


def _html_errors(root: str):
    """Errors as pages: a person at a browser gets words, not JSON."""

    def sign_in_required(request: Request, _: _SignInRequired) -> Response:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = back if request.method == "GET" else "/"
        return Redirect(f"{root}/login?{urlencode({'next': target})}", status_code=303)

    def error(status: int, title: str, message: str, headers: dict[str, str] | None = None) -> Template:
        return _page("error.html", status, headers, root=root, title=title, message=message)

    def domain(_: Request, exc: MemoryServiceError) -> Template:
        if isinstance(exc, NotFound):
            return error(404, "Not found", str(exc))
        return error(400 if isinstance(exc, InvalidInput) else 503, "That did not work", str(exc))

    def http(_: Request, exc: HTTPException) -> Template:
        if isinstance(exc, PermissionDeniedException):
            return error(403, "Form expired", "The form could not be verified. Go back, reload the page and try again.")
        if isinstance(exc, NotFoundException):
            return error(404, "Not found", "There is no such page.")
        # Whatever the exception says to send along (the rate limiter's Retry-After) goes too.
        return error(exc.status_code, "That did not work", str(exc.detail), exc.headers)

    return {_SignInRequired: sign_in_required, MemoryServiceError: domain, HTTPException: http}


def build_pages(settings: ServerSettings, service: MemoryService, store: AuthStore,
                layers: list[DefineMiddleware], login_rate_limit: DefineMiddleware) -> type[Controller]:
    root = urlsplit(settings.base_url).path.rstrip("/")

    def person(request: Request) -> str:
        # The session row is gone once the person signs out, changes the password or the account is
        # removed (`memory user remove`), whoever still holds a copy of the cookie.
        user = signed_in(request, store)
        if user is None:
            raise _SignInRequired()
        return user

    def caller_of(request: Request, user: str) -> Caller:
        # The same person the built-in authorization server's tokens name (LocalTokenVerifier), and
        # the request's id, so the page's events name the request as an assistant's do.
        return Caller(Identity(LOCAL_ISSUER, user), WEB_CLIENT_ID, request_id_of(request.scope))

    def go(path: str, notice: str | None = None) -> Redirect:
        return Redirect(f"{root}{path}" + (f"?{urlencode({'done': notice})}" if notice else ""), status_code=303)

    def common(request: Request, user: str | None, **context: Any) -> dict[str, Any]:
        return {"root": root, "user": user, "notice": _NOTICES.get(request.query_params.get("done", "")),
                **context}

    class WebPages(Controller):
        path = "/"
        include_in_schema = False
        exception_handlers = _html_errors(root)
        middleware = layers
        # Only handlers that name `user` need a signed-in person: the login form and its post do not.
        dependencies = {"user": Provide(person, sync_to_thread=False)}

        # -- signing in -------------------------------------------------------------------

        @get("/login")
        async def login_form(self, request: Request, next_path: _Next = None) -> Response:
            if signed_in(request, store) is not None:
                return Redirect(f"{root}{_safe_next(next_path)}", status_code=303)
            return _page("login.html", **common(request, None, next=_safe_next(next_path)))

        @post("/login", middleware=[login_rate_limit], status_code=303)
        async def login(self, request: Request, data: _Login) -> Response:
            name, password, back = data.username.strip(), data.password, _safe_next(data.next)
            stored = store.password_hash(name) if name else None
            matches = await anyio.to_thread.run_sync(password_matches, password, stored or _DUMMY_HASH)
            if stored is None or not matches or not sign_in(request, store, name):
                logger.info("failed web sign-in from %s", request.client.host if request.client else "?",
                            extra=log_fields(user=account_hash(name[:64])))
                return _page("login.html", 401, **common(request, None, next=back, username=name,
                                                          error="Wrong account name or password."))
            return Redirect(f"{root}{back}", status_code=303)

        @post("/logout", status_code=303)
        async def logout(self, request: Request) -> Redirect:
            sign_out(request, store)
            return go("/login")

        @get("/password")
        async def password_form(self, request: Request, user: _User) -> Template:
            return _page("password.html", **common(request, user))

        @post("/password", middleware=[login_rate_limit], status_code=303)
        async def change_password(self, request: Request, user: _User, data: _Password) -> Response:
            def refuse(error: str) -> Template:
                return _page("password.html", 400, **common(request, user, error=error))

            stored = store.password_hash(user)
            if stored is None or not await anyio.to_thread.run_sync(password_matches, data.current, stored):
                logger.info("wrong current password on the password page", extra=log_fields(user=account_hash(user)))
                return refuse("The current password is wrong.")
            if not MIN_PASSWORD_LENGTH <= len(data.new) <= MAX_PASSWORD_LENGTH:
                return refuse(f"The new password must have between {MIN_PASSWORD_LENGTH} and "
                              f"{MAX_PASSWORD_LENGTH} characters.")
            if data.new != data.confirm:
                return refuse("The two new passwords differ.")
            # Every session of the account ends, this one too; this browser gets a fresh one.
            store.set_password(user, await anyio.to_thread.run_sync(hash_password, data.new))
            sign_in(request, store, user)
            return go("/", "password")

        # -- memories ---------------------------------------------------------------------

        @get("/", sync_to_thread=True)
        def memories(self, request: Request, user: _User, q: FromQuery[str] = "", memory_type: FromQuery[str] = "",
                     scope_name: _ScopeParam = "", project: FromQuery[str] = "", entity: FromQuery[str] = "",
                     tag: FromQuery[str] = "", cursor: FromQuery[int | None] = None,
                     page: FromQuery[int] = 1) -> Template:
            caller = caller_of(request, user)
            kind = _choice(MemoryType, memory_type, "memory type")
            where = _choice(Scope, scope_name, "scope")
            filters = {"q": q, "memory_type": memory_type, "scope": scope_name, "project": project, "entity": entity,
                       "tag": tag}
            more: dict[str, Any] | None = None
            if q.strip():
                # The same retrieval the assistants use, a page at a time over its best 100.
                page = max(1, min(page, _MAX_SEARCH // _PAGE))
                result = service.retrieve_context(caller, RetrieveQuery(
                    query=q, memory_types=[kind] if kind else None, scope=where, project=project or None,
                    entity=entity or None, tags=[tag] if tag else None, limit=page * _PAGE))
                found = [r.memory for r in result.memories]
                shown = found[(page - 1) * _PAGE:]
                if len(found) == page * _PAGE and page * _PAGE < _MAX_SEARCH:
                    more = {**filters, "page": page + 1}
            else:
                listing = service.list_memories(caller, memory_type=kind, scope=where, project=project or None,
                                                entity=entity or None, tag=tag or None, cursor=cursor, limit=_PAGE)
                shown = listing.memories
                if listing.next_cursor is not None:
                    more = {**filters, "cursor": listing.next_cursor}
            return _page("memories.html", **common(
                request, user, memories=shown, filters=filters, more=urlencode(more) if more else None,
                types=[t.value for t in MemoryType], scopes=[s.value for s in Scope], when=_when))

        @post("/memories", sync_to_thread=True, status_code=303)
        def add(self, request: Request, user: _User, data: _Add) -> Redirect:
            kind = _choice(MemoryType, data.memory_type, "memory type") or MemoryType.EPISODIC
            result = service.store_memory(caller_of(request, user), StoreMemory(text=data.text, tags=_tags(data.tags),
                                                                       memory_type=kind))
            return go(f"/memories/{result.memory.id}", "duplicate" if result.duplicate_of else "stored")

        @get("/memories/{memory_id:str}", sync_to_thread=True)
        def memory(self, request: Request, user: _User, memory_id: FromPath[str], cursor: FromQuery[int] = 0) -> Template:
            caller = caller_of(request, user)
            found: Memory = service.get(caller, memory_id)
            history = service.history(caller, memory_id, cursor, _PAGE)
            return _page("memory.html", **common(
                request, user, memory=found, events=[_describe(e) for e in history.entries],
                next_cursor=history.next_cursor, when=_when, cited_url=settings.memory_url(memory_id)))

        @post("/memories/{memory_id:str}/edit", sync_to_thread=True, status_code=303)
        def edit(self, request: Request, user: _User, memory_id: FromPath[str], data: _Edit) -> Redirect:
            changes = UpdateMemory(text=data.text, tags=_tags(data.tags))
            service.update(caller_of(request, user), memory_id, changes)
            return go(f"/memories/{memory_id}", "updated")

        @post("/memories/{memory_id:str}/delete", sync_to_thread=True, status_code=303)
        def delete(self, request: Request, user: _User, memory_id: FromPath[str]) -> Redirect:
            service.delete(caller_of(request, user), memory_id, "deleted on the web page")
            return go("/", "deleted")

        @get("/deleted", sync_to_thread=True)
        def deleted(self, request: Request, user: _User, cursor: FromQuery[int | None] = None) -> Template:
            listing = service.list_memories(caller_of(request, user), cursor=cursor, limit=_PAGE, deleted=True)
            more = urlencode({"cursor": listing.next_cursor}) if listing.next_cursor is not None else None
            return _page("deleted.html", **common(request, user, memories=listing.memories, more=more, when=_when))

        @post("/memories/{memory_id:str}/restore", sync_to_thread=True, status_code=303)
        def restore(self, request: Request, user: _User, memory_id: FromPath[str]) -> Redirect:
            service.restore(caller_of(request, user), memory_id)
            return go(f"/memories/{memory_id}", "restored")

        @get("/memories/{memory_id:str}/forget", sync_to_thread=True)
        def confirm_forget(self, request: Request, user: _User, memory_id: FromPath[str]) -> Template:
            found = service.get(caller_of(request, user), memory_id)
            return _page("forget.html", **common(request, user, memory=found, when=_when))

        @post("/memories/{memory_id:str}/forget", sync_to_thread=True, status_code=303)
        def forget(self, request: Request, user: _User, memory_id: FromPath[str], data: _Forget) -> Redirect:
            if data.confirm != "yes":
                raise InvalidInput("forgetting needs the confirmation: use the Forget for good button")
            service.forget(caller_of(request, user), memory_id)
            return go("/timeline", "forgotten")

        # -- the log --------------------------------------------------------------------

        @get("/timeline", sync_to_thread=True)
        def timeline(self, request: Request, user: _User, cursor: FromQuery[int | None] = None) -> Template:
            caller = caller_of(request, user)
            log = service.timeline(caller, cursor, _TIMELINE_PAGE)
            # After the page's own read is recorded, so the count matches the newest event shown.
            chain = service.verify_chain(caller)
            return _page("timeline.html", **common(
                request, user, chain=chain, events=[_describe(e) for e in log.entries],
                next_cursor=log.next_cursor))

        @get("/export", sync_to_thread=True)
        def export(self, request: Request, user: _User) -> File:
            fd, name = tempfile.mkstemp(prefix="export-", suffix=".json")
            os.close(fd)
            path = Path(name)
            try:
                service.export(caller_of(request, user), path)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return File(path, filename="memory-export.json", media_type="application/json",
                        background=BackgroundTask(path.unlink, missing_ok=True), headers=_NO_STORE)

        # -- connected apps -------------------------------------------------------------

        @get("/apps", sync_to_thread=True)
        def apps(self, request: Request, user: _User) -> Template:
            return _page("apps.html", **common(request, user, apps=store.grants_of(user),
                                               tokens=store.personal_tokens_of(user), when=_epoch))

        @post("/apps/{family:str}/revoke", sync_to_thread=True, status_code=303)
        def revoke(self, user: _User, family: FromPath[str]) -> Redirect:
            if not store.revoke_grant(user, family):
                raise NotFound("no such connected app")
            return go("/apps", "revoked")

        @post("/apps/tokens/{name:str}/revoke", sync_to_thread=True, status_code=303)
        def revoke_token(self, user: _User, name: FromPath[str]) -> Redirect:
            if not store.revoke_personal_tokens(user, name):
                raise NotFound("no such token")
            return go("/apps", "token_revoked")

    return WebPages


def _epoch(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def build_external_idp_page(settings: ServerSettings) -> type[Controller]:
    """With an external identity provider there are no local accounts: the pages only say so."""

    class ExternalSignIn(Controller):
        path = "/"
        include_in_schema = False

        @get(["/", "/login", "/timeline", "/apps"])
        async def elsewhere(self) -> Template:
            return _page("external.html", root=urlsplit(settings.base_url).path.rstrip("/"), user=None,
                         notice=None, issuer=settings.idp_issuer)

        @get("/memories/{memory_id:str}")
        async def memory_elsewhere(self, memory_id: FromPath[str]) -> Template:
            return await self.elsewhere.fn(self)

    return ExternalSignIn
