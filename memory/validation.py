"""The checks no event gets past, in one place: what the shapes' `msgspec.Meta` constraints
cannot say (a text's size in bytes after stripping, a dotted name, an ISO 8601 time, tags
counted after removing repeats, lone surrogates, nesting depth, a scope's needs).

Every path that turns a caller's input into an event uses these: the service (for MCP, REST
and the web pages) and `memory import`. Each check raises `InvalidInput` naming the field.
"""

import re
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from memory.errors import InvalidInput
from memory.model import MAX_NAME_LENGTH, MAX_TAG_LENGTH, MAX_TAGS, MAX_TEXT_BYTES, Scope

__all__ = [
    "MAX_DEPTH",
    "MAX_PAGE",
    "check_text_fields",
    "parse_command",
    "checked",
    "cleaned",
    "check_scope",
    "check_limit",
    "clean_text",
    "clean_tags",
    "clean_entity",
    "clean_timestamp",
]

#: How deeply any argument may nest (lists in dicts in lists...): no command needs more than 3.
MAX_DEPTH = 32
#: The largest page any listing answers.
MAX_PAGE = 100
_ENTITY = re.compile(r"^[\w-]+(\.[\w-]+)*$", re.UNICODE)
_S = TypeVar("_S", bound=msgspec.Struct)


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


def parse_command(kind: type[_S], data: Any) -> _S:
    """Build a command from JSON-like data; type and Meta errors become InvalidInput with msgspec's path."""
    check_text_fields(data, "")
    try:
        return msgspec.convert(data, kind, str_keys=True)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc)) from None


def checked(command: _S) -> _S:
    """A command built in code skips the decoder's Meta checks (priority, limit): run them here."""
    return parse_command(type(command), msgspec.to_builtins(command))


def clean_text(text: str, what: str = "text") -> str:
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(f"{what} must not be empty")
    size = len(stripped.encode())
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(f"{what} is {size} bytes; the limit is {MAX_TEXT_BYTES}")
    return stripped


def clean_tags(tags: list[str]) -> list[str]:
    cleaned_tags = list(dict.fromkeys(t.strip() for t in tags))
    if len(cleaned_tags) > MAX_TAGS:
        raise InvalidInput(f"{len(cleaned_tags)} tags given; the limit is {MAX_TAGS}")
    for tag in cleaned_tags:
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise InvalidInput(f"each tag must have 1 to {MAX_TAG_LENGTH} characters (got {tag!r})")
    return cleaned_tags


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


def _clean_task_id(task_id: str) -> str | None:
    return task_id.strip() or None


#: A memory's field -> how its value is checked and normalised, whichever shape carries it.
_CLEANERS = {
    "text": clean_text,
    "entity": clean_entity,
    "project": lambda name: clean_entity(name, "project"),
    "task_id": _clean_task_id,
    "tags": clean_tags,
    "occurred_at": clean_timestamp,
    "created_at": lambda stamp: clean_timestamp(stamp, "created_at"),
    "updated_at": lambda stamp: clean_timestamp(stamp, "updated_at"),
}


def cleaned(shape: _S) -> _S:
    """A copy of any struct carrying a memory's fields (a store, an update, a session item, an
    imported record) with each field it sets checked and normalised; unset and null stay so."""
    changes = {}
    for field in shape.__struct_fields__:
        value = getattr(shape, field)
        if field in _CLEANERS and value is not None and value is not msgspec.UNSET:
            changes[field] = _CLEANERS[field](value)
    return msgspec.structs.replace(shape, **changes)


def check_scope(scope: Scope, project: str | None, task_id: str | None) -> None:
    """What a scope needs: a project for project and task, a task_id for task."""
    if scope in (Scope.PROJECT, Scope.TASK) and project is None:
        raise InvalidInput(f"scope {scope.value!r} needs a project (or set_project first)")
    if scope == Scope.TASK and not task_id:
        raise InvalidInput("scope 'task' needs a task_id")


def check_limit(limit: int, most: int = MAX_PAGE) -> None:
    if not 1 <= limit <= most:
        raise InvalidInput(f"limit must be between 1 and {most}")
