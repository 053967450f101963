"""The memory model: what a memory is, independent of how it is stored or served."""

from enum import Enum

import msgspec

__all__ = [
    "MemoryType",
    "Scope",
    "Status",
    "LinkType",
    "Link",
    "Memory",
    "Entity",
    "MAX_TEXT_BYTES",
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "MAX_NAME_LENGTH",
]

MAX_TEXT_BYTES = 32 * 1024
MAX_TAGS = 32
MAX_TAG_LENGTH = 64
MAX_NAME_LENGTH = 200


class MemoryType(str, Enum):
    CORE_IDENTITY = "core_identity"
    PROJECT_CONTEXT = "project_context"
    TASK_INSTRUCTION = "task_instruction"
    EPISODIC = "episodic"


class Scope(str, Enum):
    GLOBAL = "global"
    PROJECT = "project"
    TASK = "task"


class Status(str, Enum):
    ACTIVE = "active"
    COMPLETED = "completed"
    SUPERSEDED = "superseded"
    PARKED = "parked"


class LinkType(str, Enum):
    SUPPORTS = "supports"
    CONTRADICTS = "contradicts"
    SUPERSEDES = "supersedes"
    REFINES = "refines"
    DEPENDS_ON = "depends_on"
    IMPLEMENTS = "implements"
    EXAMPLE_OF = "example_of"


class Link(msgspec.Struct, frozen=True):
    source_id: str
    target_id: str
    link_type: LinkType


class Memory(msgspec.Struct, kw_only=True):
    id: str
    text: str
    memory_type: MemoryType
    scope: Scope
    entity: str | None = None
    project: str | None = None
    task_id: str | None = None
    tags: list[str] = []
    status: Status | None = None
    priority: int = 0
    created_at: str
    updated_at: str
    occurred_at: str | None = None
    deleted: bool = False
    links: list[Link] = []


class Entity(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    parent: str | None = None
    registered: bool = False
    memory_count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
