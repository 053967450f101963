"""What `memory stats` reports, read from the logs: users, who was active in the last day, memories
per user, and which operations the logs record."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from memory.commands import RetrieveQuery, StoreMemory
from memory.identity import Identity
from memory.service import Caller, MemoryService
from memory.stats import collect_stats

MEMORY = str(Path(sys.executable).parent / "memory")


def _fill(data_dir: Path, embedder) -> None:
    service = MemoryService(data_dir, embedder)
    alice, bob = Caller(Identity("local", "alice"), "t"), Caller(Identity("local", "bob"), "t")
    for text in ("Alice likes rye bread", "Alice cycles to work", "Alice plays the cello"):
        service.store(alice, StoreMemory(text=text))
    service.store(bob, StoreMemory(text="Bob grows tomatoes"))
    service.retrieve_context(alice, RetrieveQuery(query="what does alice play?"))
    service.get(bob, service.search(bob, "tomatoes")[0].id)
    service.close()


def test_stats_count_users_activity_memories_and_operations(data_dir, embedder):
    _fill(data_dir, embedder)
    stats = collect_stats(data_dir)
    assert stats.users == 2 and stats.daily_active_users == 2
    assert (stats.memories_min, stats.memories_median, stats.memories_max) == (1, 2, 3)
    assert stats.operations["memory.stored"] == 4
    # search is a retrieval underneath, and is recorded as one.
    assert stats.operations["read:retrieve_context"] == 2 and stats.operations["read:fetch"] == 1
    assert stats.events == sum(stats.operations.values())
    # Nobody wrote in the day before a moment two days from now.
    assert collect_stats(data_dir, now=datetime.now(UTC) + timedelta(days=2)).daily_active_users == 0


def test_memory_stats_prints_the_same_numbers_as_json(data_dir, embedder):
    _fill(data_dir, embedder)
    result = subprocess.run([MEMORY, "stats", "--data-dir", str(data_dir), "--json"], capture_output=True,
                            text=True, check=True, timeout=60)
    report = json.loads(result.stdout)
    assert report["users"] == 2 and report["memories_max"] == 3 and report["daily_active_users"] == 2
    assert {u["user"] for u in report["per_user"]} == {"alice", "bob"}
    table = subprocess.run([MEMORY, "stats", "--data-dir", str(data_dir)], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    assert "2 user(s), 2 active in the last 24 hours" in table and "median 2" in table
