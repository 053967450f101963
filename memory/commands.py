"""What callers may ask of the service, as typed structs, and the checks no event gets past.

Adapters decode requests into these (msgspec gives type errors), then `validate_*` enforces what
types cannot say. A command that fails here appends nothing.
"""

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from memory.errors import InvalidInput
from memory.model import (
    MAX_NAME_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    MAX_TEXT_BYTES,
    MemoryType,
    Scope,
    Status,
)

__all__ = [
    "StoreMemory",
    "UpdateMemory",
    "RetrieveQuery",
    "SessionItem",
    "SyncSession",
    "parse_command",
    "clean_text",
    "clean_tags",
    "clean_entity",
    "clean_timestamp",
    "check_text_fields",
    "MAX_LIMIT",
    "MAX_DEPTH",
    "MAX_SUPERSEDES",
]

MAX_LIMIT = 100
MAX_SUPERSEDES = 20
#: How deeply any argument may nest (lists in dicts in lists...): no command needs more than 3.
MAX_DEPTH = 32
_ENTITY = re.compile(r"^[\w-]+(\.[\w-]+)*$", re.UNICODE)
Priority = Annotated[int, msgspec.Meta(ge=0, le=10)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]


class _Command(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class StoreMemory(_Command):
    text: str
    memory_type: MemoryType = MemoryType.EPISODIC
    scope: Scope = Scope.GLOBAL
    entity: str | None = None
    project: str | None = None
    task_id: str | None = None
    tags: list[str] = []
    status: Status | None = None
    priority: Priority = 0
    occurred_at: str | None = None
    #: Idempotency key: a retry with the same id and content returns the first result.
    event_id: str | None = None
    #: Store even when a live memory already says the same (otherwise that one is the answer).
    allow_duplicate: bool = False
    #: Ids of memories this one replaces: each is linked to it and marked superseded.
    supersedes: Annotated[list[str], msgspec.Meta(max_length=MAX_SUPERSEDES)] = []


class UpdateMemory(_Command):
    text: str | msgspec.UnsetType = msgspec.UNSET
    memory_type: MemoryType | msgspec.UnsetType = msgspec.UNSET
    entity: str | None | msgspec.UnsetType = msgspec.UNSET
    tags: list[str] | msgspec.UnsetType = msgspec.UNSET
    status: Status | None | msgspec.UnsetType = msgspec.UNSET
    priority: Priority | msgspec.UnsetType = msgspec.UNSET
    occurred_at: str | None | msgspec.UnsetType = msgspec.UNSET
    #: Ids of memories this one replaces: each is linked to it and marked superseded.
    supersedes: Annotated[list[str], msgspec.Meta(max_length=MAX_SUPERSEDES)] | msgspec.UnsetType = msgspec.UNSET


class RetrieveQuery(_Command):
    query: str = ""
    memory_types: list[MemoryType] | None = None
    scope: Scope | None = None
    project: str | None = None
    task_id: str | None = None
    entity: str | None = None
    tags: list[str] | None = None
    status: Status | None = None
    limit: Limit = 10
    #: 0.1: enough to prefer the newer of two equally good answers; at 0.3 recall on LoCoMo asked
    #: the day after the last session fell by 0.03 (bench/locomo.py).
    recency_weight: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.1
    include_related: bool = False
    #: Superseded memories leave retrieval unless asked for (or `status` is given).
    include_superseded: bool = False
    #: A seq (int) or an RFC 3339 time: answer from the memory as it was then.
    as_of: int | str | None = None
    #: Leave out memories scoring under this; None: the calibrated relevance floor, 0: none.
    min_score: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)] | None = None


class SessionItem(_Command):
    text: str
    entity: str | None = None
    tags: list[str] = []
    status: Status | None = None
    #: The id of a memory this one replaces: it is linked and marked superseded.
    supersedes: str | None = None


class SyncSession(_Command):
    project: str | None = None
    task_id: str | None = None
    decisions: list[SessionItem] = []
    learnings: list[SessionItem] = []
    status_updates: list[SessionItem] = []
    feedback: list[SessionItem] = []


def check_text_fields(value: Any, name: str) -> None:
    """The check every value a caller sends passes before the service uses it: each string in it
    is text that UTF-8 can hold (JSON's \\ud800 decodes to a lone surrogate, which no log, index
    or model can store), and it nests at most MAX_DEPTH levels. InvalidInput names the field."""
    stack: list[tuple[Any, str, int]] = [(value, name, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{re.split(r'[.[]', where)[0] or 'the value'} nests more than {MAX_DEPTH} levels deep")
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError as exc:
                raise InvalidInput(f"{where or 'the value'} holds a lone surrogate (U+{ord(item[exc.start]):04X}), "
                                   "which is not text UTF-8 can store") from None
        elif isinstance(item, msgspec.Struct):
            stack += [(getattr(item, f), f"{where}.{f}" if where else f, depth + 1) for f in item.__struct_fields__]
        elif isinstance(item, dict):
            for key, inner in item.items():
                key_name = f"{where}.{key}" if where else str(key)
                stack += [(key, f"a field name in {where or 'the body'}", depth + 1), (inner, key_name, depth + 1)]
        elif isinstance(item, list | tuple):
            stack += [(inner, f"{where}[{i}]", depth + 1) for i, inner in enumerate(item)]


def parse_command(kind: type, data: Any):
    """Build a command from JSON-like data; type errors become InvalidInput with msgspec's path."""
    check_text_fields(data, "")
    try:
        return msgspec.convert(data, kind, str_keys=True)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from None


def clean_text(text: str, what: str = "text") -> str:
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(f"{what} must not be empty")
    size = len(stripped.encode())
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(f"{what} is {size} bytes; the limit is {MAX_TEXT_BYTES}")
    return stripped


def clean_tags(tags: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(t.strip() for t in tags))
    if len(cleaned) > MAX_TAGS:
        raise InvalidInput(f"{len(cleaned)} tags given; the limit is {MAX_TAGS}")
    for tag in cleaned:
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise InvalidInput(f"each tag must have 1 to {MAX_TAG_LENGTH} characters (got {tag!r})")
    return cleaned


def clean_entity(name: str | None, what: str = "entity") -> str | None:
    if name is None:
        return None
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH or not _ENTITY.match(name):
        raise InvalidInput(
            f"{what} {name!r} is not a valid name: use letters, digits, '-' or '_', dotted for "
            f"a hierarchy (like acme.marketing), at most {MAX_NAME_LENGTH} characters"
        )
    return name


def clean_timestamp(value: str | None, what: str = "occurred_at") -> str | None:
    """Any ISO 8601 date or time; stored as RFC 3339 UTC. A bare date means its midnight UTC."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{what} must be an ISO 8601 date or time, like 2026-05-08T13:56:00Z (got {value!r})") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
