"""The memory model: what a memory is, independent of how it is stored or served."""

from enum import Enum
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = [
    "MemoryType",
    "Scope",
    "Status",
    "LinkType",
    "Link",
    "MemoryFields",
    "Memory",
    "Entity",
    "initial_status",
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


class MemoryFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a memory says of itself: the one definition of its fields, with their constraints and
    the descriptions an assistant reads (the MCP tools' and the REST API's schemas derive from it).

    A store, an update, an imported record and the memory itself are made of these fields; a
    new field is added here, checked in memory/validation.py and given a projection column."""

    text: Annotated[str, Meta(description="The memory, in plain sentences (at most 32 KiB). One fact or event "
                                          "per memory.")]
    memory_type: Annotated[MemoryType, Meta(
        description="core_identity: stable facts about the user (name, role, preferences); project_context: "
                    "facts and decisions about a project; task_instruction: how the user wants a kind of task "
                    "done; episodic: something that happened.")] = MemoryType.EPISODIC
    scope: Annotated[Scope, Meta(
        description="global: true everywhere; project: only within `project` (defaults to the active project); "
                    "task: only for `task_id` within the project.")] = Scope.GLOBAL
    entity: Annotated[str | None, Meta(description="What or whom it is about, dotted for a hierarchy: "
                                                   "'acme.billing', 'people.sam'.")] = None
    project: Annotated[str | None, Meta(description="The project it belongs to; defaults to the active project "
                                                    "for scope project/task.")] = None
    task_id: Annotated[Annotated[str, Meta(max_length=MAX_NAME_LENGTH)] | None,
                       Meta(description="Required for scope task.")] = None
    tags: Annotated[list[str], Meta(description="Short labels, at most 32.")] = []
    status: Annotated[Status | None, Meta(description="For things with a lifecycle: active, completed, "
                                                      "superseded, parked.")] = None
    priority: Annotated[int, Meta(ge=0, le=10, description="0 (default) to 10; higher ranks first.")] = 0
    occurred_at: Annotated[str | None, Meta(description="When it happened, ISO 8601: '2026-05-08' or "
                                                        "'2026-05-08T13:56:00Z'.")] = None


class Memory(MemoryFields, kw_only=True, forbid_unknown_fields=False):
    """A memory as the projections hold it: its fields, and what the log says of it."""

    id: str
    created_at: str
    updated_at: str
    deleted: bool = False
    links: list[Link] = []


class Entity(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    parent: str | None = None
    registered: Annotated[bool, Meta(description="Registered explicitly, rather than only seen on memories.")] = False
    memory_count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None


def initial_status(memory_type: MemoryType, status: Status | None) -> Status | None:
    """A new memory's status: project facts and decisions without one are active."""
    if status is None and memory_type == MemoryType.PROJECT_CONTEXT:
        return Status.ACTIVE
    return status
