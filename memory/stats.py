"""What an operator watches, read from the logs: users, who was active, how many memories,
which operations. `memory stats` prints it; /metrics publishes the same numbers.

Failed calls append no event: their counts come from what the server tallies in its store
(`tool_calls`), written every 30 s and at shutdown.
"""

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from memory.identity import Identity
from memory.logs import LogDirectory, SqliteLogDirectory

__all__ = ["UserStats", "Stats", "collect_stats", "tool_calls", "TOOL_CALL_COUNTER"]

#: How the server names a tool-call counter in its store (memory.server.metrics.ToolCallTally).
TOOL_CALL_COUNTER = "tool_calls:{tool}:{outcome}"


class UserStats(msgspec.Struct, kw_only=True):
    user: str
    key: str
    events: int
    memories: int
    reads: int
    last_event_at: str | None
    #: Operations recorded in the log: event types, and each read by the tool that made it.
    operations: dict[str, int]


class Stats(msgspec.Struct, kw_only=True):
    users: int
    daily_active_users: int
    events: int
    memories_min: int
    memories_median: float
    memories_max: int
    operations: dict[str, int]
    per_user: list[UserStats]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _user_stats(logs: LogDirectory, owner: Identity, since: str, operations: bool) -> tuple[UserStats, bool]:
    tally = logs.tally(owner, since, operations)
    ops = {t: n for t, n in tally.by_type.items() if t != "memories.read"} | tally.reads
    memories = tally.by_type.get("memory.stored", 0) - tally.by_type.get("memory.forgotten", 0)
    return UserStats(user=str(owner), key=owner.key, events=tally.events, memories=memories,
                     reads=tally.by_type.get("memories.read", 0), last_event_at=tally.last_event_at,
                     operations=ops), tally.active


def collect_stats(logs: LogDirectory | str | Path, now: datetime | None = None, operations: bool = True) -> Stats:
    """Over every log of `logs` (a data dir's SQLite logs when given a path)."""
    if isinstance(logs, str | Path):
        logs = SqliteLogDirectory(logs, None)  # type: ignore[arg-type]  # tallies need no keys
    since = _iso((now or datetime.now(UTC)) - timedelta(days=1))
    per_user, active = [], 0
    for _, owner in logs.list_logs():
        user, was_active = _user_stats(logs, owner, since, operations)
        per_user.append(user)
        active += was_active
    counts = [u.memories for u in per_user] or [0]
    operations: dict[str, int] = {}
    for u in per_user:
        for name, n in u.operations.items():
            operations[name] = operations.get(name, 0) + n
    return Stats(users=len(per_user), daily_active_users=active, events=sum(u.events for u in per_user),
                 memories_min=min(counts), memories_median=statistics.median(counts), memories_max=max(counts),
                 operations=dict(sorted(operations.items())), per_user=per_user)


def tool_calls(counters: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Tool -> (successful, failed) calls, from the server store's counters (`tool_calls:TOOL:OUTCOME`)."""
    calls: dict[str, tuple[int, int]] = {}
    for name, n in counters.items():
        kind, _, rest = name.partition(":")
        tool, _, outcome = rest.rpartition(":")
        if f"{kind}:{{tool}}:{{outcome}}" != TOOL_CALL_COUNTER or not tool:
            continue
        ok, failed = calls.get(tool, (0, 0))
        calls[tool] = (ok + n, failed) if outcome == "ok" else (ok, failed + n)
    return calls
