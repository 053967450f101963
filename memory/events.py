"""Event payloads: a tagged union of msgspec Structs, versioned, upcast on read.

The payload bytes are what the log stores and hashes; the `type` tag inside them names the
event, and `SCHEMA_VERSIONS` the shape written today. An older shape is brought up to date by the
upcasters registered here before it is decoded, so projections only ever see current events.

Version 2 (every type) adds `salt`: 16 random bytes (hex) in each payload, so that the hash a
signed header keeps of a redacted payload cannot confirm a guessed text ("yes", a PIN): without
the salt, which left with the payload, no guess hashes to it. Version 1 payloads have none.
"""

import secrets
from collections.abc import Callable
from typing import Any

import msgspec

from memory.model import LinkType, MemoryType, Scope, Status

__all__ = [
    "EventPayload",
    "MemoryStored",
    "MemoryUpdated",
    "MemoryDeleted",
    "MemoryForgotten",
    "MemoriesLinked",
    "EntityRegistered",
    "ProjectSet",
    "MemoriesRead",
    "MemoryDeduplicated",
    "MemoryRestored",
    "ImportSource",
    "Event",
    "SCHEMA_VERSIONS",
    "encode_payload",
    "decode_payload",
    "register_upcaster",
    "without_salt",
]


def _new_salt() -> str:
    return secrets.token_hex(16)


class EventPayload(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    # Drawn when the payload is made: a retry of the same command has another salt, so the log
    # compares payloads without it (SqliteEventLog._existing).
    salt: str = msgspec.field(default_factory=_new_salt)


class ImportSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where an imported memory came from: the other tool, its id there and its own timestamps."""

    format: str
    original_id: str
    created_at: str | None = None
    updated_at: str | None = None


class MemoryStored(EventPayload, tag="memory.stored"):
    memory_id: str
    text: str
    memory_type: MemoryType
    scope: Scope
    entity: str | None = None
    project: str | None = None
    task_id: str | None = None
    tags: list[str] = []
    status: Status | None = None
    priority: int = 0
    occurred_at: str | None = None
    #: v2: set when `memory import` brought the memory from another tool.
    imported_from: ImportSource | None = None


class MemoryUpdated(EventPayload, tag="memory.updated"):
    """Only the fields that changed are present; UNSET means unchanged, None means cleared."""

    memory_id: str
    text: str | msgspec.UnsetType = msgspec.UNSET
    memory_type: MemoryType | msgspec.UnsetType = msgspec.UNSET
    entity: str | None | msgspec.UnsetType = msgspec.UNSET
    tags: list[str] | msgspec.UnsetType = msgspec.UNSET
    status: Status | None | msgspec.UnsetType = msgspec.UNSET
    priority: int | msgspec.UnsetType = msgspec.UNSET
    occurred_at: str | None | msgspec.UnsetType = msgspec.UNSET


class MemoryDeleted(EventPayload, tag="memory.deleted"):
    """Soft delete: hidden from retrieval, still in the log and in history."""

    memory_id: str
    reason: str | None = None


class MemoryRestored(EventPayload, tag="memory.restored"):
    """A soft-deleted memory is live again, as it was when deleted."""

    memory_id: str


class MemoryForgotten(EventPayload, tag="memory.forgotten"):
    """Erasure: the tombstone. The payloads of `redacted_seqs` are removed from the log."""

    memory_id: str
    redacted_seqs: list[int] = []


class MemoriesLinked(EventPayload, tag="memories.linked"):
    source_id: str
    target_id: str
    link_type: LinkType


class EntityRegistered(EventPayload, tag="entity.registered"):
    name: str
    description: str | None = None
    parent: str | None = None


class ProjectSet(EventPayload, tag="project.set"):
    """The caller's active project, per OAuth client: later calls of that client default to it."""

    project: str
    client_id: str | None = None


class MemoriesRead(EventPayload, tag="memories.read"):
    """A read: who asked what and which ids they got back, so a person can audit every access."""

    operation: str
    query: str | None = None
    filters: dict[str, Any] = {}
    returned_ids: list[str] = []


class MemoryDeduplicated(EventPayload, tag="memory.deduplicated"):
    """A store that was not made because `memory_id`, a live memory, already says the same: the
    attempt stays in the audit (and in that memory's history). No text: the memory has it."""

    memory_id: str
    match: str  # "exact" (same text once normalised) or "near" (projections.duplicates)
    score: float


Event = (
    MemoryStored
    | MemoryUpdated
    | MemoryDeleted
    | MemoryForgotten
    | MemoriesLinked
    | EntityRegistered
    | ProjectSet
    | MemoriesRead
    | MemoryDeduplicated
    | MemoryRestored
)

_TYPES = (
    MemoryStored,
    MemoryUpdated,
    MemoryDeleted,
    MemoryForgotten,
    MemoriesLinked,
    EntityRegistered,
    ProjectSet,
    MemoriesRead,
    MemoryDeduplicated,
    MemoryRestored,
)
# v2 salted every payload; memory.stored v3 added `imported_from`.
SCHEMA_VERSIONS: dict[str, int] = {cls.__struct_config__.tag: 2 for cls in _TYPES} | {"memory.stored": 3}

_Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_upcasters: dict[tuple[str, int], _Upcaster] = {}
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)
_raw_decoder = msgspec.json.Decoder(dict[str, Any])


def _identity(raw: dict[str, Any]) -> dict[str, Any]:
    return raw


def register_upcaster(event_type: str, from_version: int, upcast: _Upcaster) -> None:
    """Teach the reader to turn a `from_version` payload into the `from_version + 1` shape."""
    _upcasters[(event_type, from_version)] = upcast


def _unsalted(raw: dict[str, Any]) -> dict[str, Any]:
    # A v1 payload was hashed as it is: an empty salt says so, and stays out of any re-encoding.
    return {**raw, "salt": ""}


for _cls in _TYPES:
    register_upcaster(_cls.__struct_config__.tag, 1, _unsalted)


def without_salt(payload: EventPayload) -> EventPayload:
    """The payload as a v1 payload would have said it: what two payloads differing only by their
    salt have in common."""
    return msgspec.structs.replace(payload, salt="")


def encode_payload(payload: EventPayload) -> bytes:
    return _encoder.encode(payload)


def decode_payload(data: bytes, event_type: str, schema_version: int) -> Event:
    current = SCHEMA_VERSIONS.get(event_type)
    if current is None:
        raise ValueError(f"unknown event type {event_type!r}")
    if schema_version == current:
        return _decoder.decode(data)
    if schema_version > current:
        raise ValueError(f"{event_type} v{schema_version} is newer than this code (v{current})")
    raw = _raw_decoder.decode(data)
    for version in range(schema_version, current):
        upcast = _upcasters.get((event_type, version))
        if upcast is None:
            raise ValueError(f"no upcaster for {event_type} v{version}")
        raw = upcast(raw)
    return msgspec.convert(raw, Event)


# memory.stored v3 added `imported_from`, optional: a v2 payload is already a valid v3 one.
register_upcaster("memory.stored", 2, _identity)
