"""What callers may ask of the service, as typed structs built from the one definition of a
memory's fields (`memory.model.MemoryFields`).

Adapters decode requests into these (msgspec checks types and Meta constraints), then
memory/validation.py enforces what types cannot say. A command that fails either appends nothing.
"""

import typing
from typing import Annotated

import msgspec
from msgspec import Meta

from memory.model import MemoryFields, MemoryType, Scope, Status

__all__ = [
    "StoreMemory",
    "UpdateMemory",
    "MemoryFilter",
    "RetrieveQuery",
    "SessionItem",
    "SyncSession",
    "FIXED_FIELDS",
    "MAX_LIMIT",
    "MAX_SUPERSEDES",
]

MAX_LIMIT = 100
MAX_SUPERSEDES = 20
#: What a memory keeps for life: where it lives. Every other field of it can be updated.
FIXED_FIELDS = ("scope", "project", "task_id")


class _Command(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class StoreMemory(MemoryFields, kw_only=True, forbid_unknown_fields=True):
    event_id: Annotated[str | None, Meta(description="Optional UUID making retries safe: the same id stores "
                                                     "once and becomes the memory's id.")] = None
    allow_duplicate: Annotated[bool, Meta(description="Store even if a live memory already says the same (by "
                                                      "default that one is returned).")] = False
    supersedes: Annotated[list[str], Meta(max_length=MAX_SUPERSEDES, description=(
        "Ids of older memories this one replaces: they are marked superseded and leave retrieval."))] = []


def _changes_of(fields: type[msgspec.Struct]) -> list[tuple[str, object, object]]:
    """Each updatable field of a memory, optional: UNSET means unchanged, None (where the field
    allows it) means cleared. Its constraints stay; its description says that it replaces."""
    changes = []
    for name, hint in typing.get_type_hints(fields, include_extras=True).items():
        if name in FIXED_FIELDS:
            continue
        kind, *metas = typing.get_args(hint)
        said = " ".join(m.description for m in metas if m.description)
        changes.append((name, Annotated[kind, *metas, Meta(description=f"New value, replacing the old: {said}")]
                        | msgspec.UnsetType, msgspec.UNSET))
    return changes


_Update = msgspec.defstruct("_Update", _changes_of(MemoryFields), kw_only=True, forbid_unknown_fields=True)


class UpdateMemory(_Update, kw_only=True, forbid_unknown_fields=True):
    """The fields to change (the others stay), and the memories this one now replaces."""

    supersedes: Annotated[list[str], Meta(max_length=MAX_SUPERSEDES, description=(
        "Ids of older memories this one now replaces: they are marked superseded."))] | msgspec.UnsetType = msgspec.UNSET


class MemoryFilter(_Command):
    """Which memories a retrieval considers: the one definition of the filters (the ranking's SQL
    and the read recorded in the log take it as it is)."""

    memory_types: Annotated[list[MemoryType] | None, Meta(
        description="Only these types: core_identity, project_context, task_instruction, episodic.")] = None
    scope: Annotated[Scope | None, Meta(description="Only this scope: global, project or task.")] = None
    project: Annotated[str | None, Meta(description="Only this project (defaults to the active one).")] = None
    task_id: Annotated[str | None, Meta(description="Only this task.")] = None
    entity: Annotated[str | None, Meta(description="Only this entity and the ones below it.")] = None
    tags: Annotated[list[str] | None, Meta(description="Only memories carrying any of these tags.")] = None
    status: Annotated[Status | None, Meta(description="Only this status: active, completed, superseded, "
                                                      "parked.")] = None
    #: Superseded memories leave retrieval unless asked for (or `status` is given).
    include_superseded: Annotated[bool, Meta(description="Also return memories marked superseded (left out "
                                                         "by default).")] = False


class RetrieveQuery(MemoryFilter):
    query: Annotated[str, Meta(description="What the answer is about, in natural language. Empty: the most "
                                           "relevant recent memories.")] = ""
    limit: Annotated[int, Meta(ge=1, le=MAX_LIMIT, description=f"How many memories, 1 to {MAX_LIMIT}.")] = 10
    #: 0.1: enough to prefer the newer of two equally good answers; at 0.3 recall on LoCoMo asked
    #: the day after the last session fell by 0.03 (bench/locomo.py).
    recency_weight: Annotated[float, Meta(ge=0.0, le=1.0, description="0 ranks by relevance only; 1 prefers "
                                                                      "recent memories.")] = 0.1
    include_related: Annotated[bool, Meta(description="Also return memories linked to each result.")] = False
    #: A seq (int) or an RFC 3339 time: answer from the memory as it was then.
    as_of: Annotated[int | str | None, Meta(description="Answer as the memory was at an event seq or an ISO "
                                                        "8601 time: '2026-05-01T00:00:00Z'.")] = None

    #: Leave out memories scoring under this; None: the calibrated relevance floor, 0: none.
    min_score: Annotated[float, Meta(ge=0.0, le=100.0, description=(
        "Leave out memories scoring under this (scores are about 0 to 1.5). Default: the calibrated "
        "relevance floor, so a query about nothing stored returns none; 0 returns the closest anyway."))] | None = None

    @property
    def filter(self) -> MemoryFilter:
        return MemoryFilter(**{f: getattr(self, f) for f in MemoryFilter.__struct_fields__})


class SessionItem(_Command):
    text: Annotated[str, Meta(description="The decision, learning, status or feedback, in one or a few "
                                          "sentences.")]
    entity: Annotated[str | None, Meta(description="What it is about, dotted for a hierarchy: 'acme.billing'. "
                                                   "Required for status_updates and feedback.")] = None
    tags: Annotated[list[str], Meta(description="Extra tags (the kind is tagged automatically).")] = []
    status: Annotated[Status | None, Meta(description="active | completed | superseded | parked.")] = None
    supersedes: Annotated[str | None, Meta(description="Id of an older memory this one replaces; that one is "
                                                       "linked and marked superseded.")] = None


class SyncSession(_Command):
    project: Annotated[str | None, Meta(description="The project (defaults to the active one).")] = None
    task_id: Annotated[str | None, Meta(description="The task the session worked on.")] = None
    decisions: Annotated[list[SessionItem], Meta(description="Decisions made (added).")] = []
    learnings: Annotated[list[SessionItem], Meta(description="Things learned (added).")] = []
    status_updates: Annotated[list[SessionItem], Meta(
        description="Where things stand, one per entity (replaces that entity's last status).")] = []
    feedback: Annotated[list[SessionItem], Meta(
        description="How the user wants things done, one per entity (replaces the last).")] = []
