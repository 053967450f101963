"""`memory serve --workers 2`: two real worker processes on one port over one data directory.

Every call opens a connection of its own, so the kernel hands it to either worker; which one
answered is read back from /metrics (`memory_worker_tool_calls`, one series per worker pid)."""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from server_calls import call, log_lengths

from memory.server.process import ServerProcess
from memory.userstore import list_logs, remove_replicas

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("workers") / "data"
    with ServerProcess(data_dir, extra_args=["--workers", "2", "--call-rate-limit", "1000"]) as running:
        running.wait_ready(timeout=120)
        yield running


@asynccontextmanager
async def client(server: ServerProcess, token: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(server.mcp_url, http_client=http), mode="auto") as opened:
            yield opened


async def one_call(server: ServerProcess, token: str, tool: str, arguments: dict[str, Any] | None = None) -> dict:
    """One tool call on a connection of its own (so on whichever worker accepts it)."""
    async with client(server, token) as opened:
        return await call(opened, tool, arguments)


def calls_by_worker(server: ServerProcess) -> dict[int, int]:
    """pid -> tool calls that worker answered, from /metrics."""
    text = httpx2.get(f"{server.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name == "memory_worker_tool_calls":
            return {int(s.labels["pid"]): int(s.value) for s in family.samples}
    raise AssertionError("no memory_worker_tool_calls in /metrics")


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    text = httpx2.get(f"{server.url}/metrics", timeout=30).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def user_files(data_dir: Path, user_folder: str) -> list[Path]:
    return sorted((data_dir / "users" / user_folder).glob("*.sqlite*"))


async def test_the_workers_are_distinct_processes_and_each_answers_calls(workers):
    token = workers.token("wendy")
    before = calls_by_worker(workers)
    for _ in range(16):
        await one_call(workers, token, "get_context_info")
    after = calls_by_worker(workers)
    served = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert sum(served.values()) == 16
    assert len(served) == 2 and all(n > 0 for n in served.values()), served
    # Both are children of the one `memory serve` the test started, and neither is that process.
    assert {parent_of(pid) for pid in served} == {workers.pid}


def test_workers_refuse_a_port_another_server_listens_on(workers):
    # Their sockets share the port with each other (SO_REUSEPORT), never with a stranger.
    second = subprocess.run([str(Path(sys.executable).parent / "memory"), "serve", "--workers", "2", "--port",
                             str(workers.port), "--data-dir", str(workers.data_dir.parent / "other")],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert f"cannot listen on 127.0.0.1:{workers.port}" in second.stderr


async def test_a_memory_stored_through_one_worker_is_found_by_the_next_call_on_the_other(workers):
    token = workers.token("rita")
    crossed = 0
    for i in range(40):
        before = calls_by_worker(workers)
        stored = await one_call(workers, token, "store_memory", {"text": f"Rita's locker code is {i} ostrich {i}"})
        found = await one_call(workers, token, "retrieve_context", {"query": f"locker code {i} ostrich", "limit": 3})
        # Every retrieval finds the memory stored just before it, whichever worker answers.
        assert stored["id"] in [m["id"] for m in found["memories"]], (i, found)
        after = calls_by_worker(workers)
        crossed += sorted(after[pid] - before.get(pid, 0) for pid in after) == [1, 1]
        if crossed >= 3:
            break
    assert crossed >= 3, "the store and the retrieval never landed on different workers"


async def test_appends_through_both_workers_to_one_log_stay_gapless_and_unforked(workers):
    token = workers.token("gina")
    before = calls_by_worker(workers)

    async def writer(n: int) -> list[str]:
        ids = []
        for i in range(6):
            async with client(workers, token) as opened:
                ids.append((await call(opened, "store_memory", {"text": f"gina fact {n}-{i} about kiwis"}))["id"])
        return ids

    ids = [i for batch in await asyncio.gather(*(writer(n) for n in range(8))) for i in batch]
    after = calls_by_worker(workers)
    assert len(set(ids)) == 48
    assert all(after[pid] > before.get(pid, 0) for pid in after), "both workers appended"
    verified = subprocess.run([str(Path(sys.executable).parent / "memory"), "verify", "--data-dir",
                               str(workers.data_dir), "--user", "gina"], capture_output=True, text=True)
    # Chain, signatures, seq contiguity, head anchor, and worker 0's projections agree with the log.
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert 48 in log_lengths(workers.data_dir).values()
    # Every worker that follows the log sees all 48 (its own projection file, caught up by seq).
    listed = await one_call(workers, token, "get_context_info")
    assert listed["total_memories"] == 48
    # One vector cache for both, in the first worker's file: no text is embedded once per worker.
    folder = next(path for path, owner in list_logs(workers.data_dir) if owner.sub == "gina")
    cached = {}
    for name in ("projections.sqlite", "projections.worker1.sqlite"):
        with closing(sqlite3.connect(f"file:{folder / name}?mode=ro", uri=True)) as db:
            cached[name] = db.execute("SELECT count(*) FROM embedding_cache").fetchone()[0]
    assert cached == {"projections.sqlite": 48, "projections.worker1.sqlite": 0}


async def test_forgetting_through_one_worker_leaves_every_workers_files_within_two_seconds(workers):
    token = workers.token("fern")
    secret = "Fern keeps the spare key under the blue heron statue"
    stored = await one_call(workers, token, "store_memory", {"text": secret})
    folder = next(path.name for path, owner in list_logs(workers.data_dir) if owner.sub == "fern")
    # Until both workers have the person open (each then holds the text in its own file).
    needle = b"blue heron statue"
    for _ in range(40):
        await one_call(workers, token, "retrieve_context", {"query": "where is the spare key", "limit": 3})
        holders = [p.name for p in user_files(workers.data_dir, folder) if needle in p.read_bytes()]
        if {"projections.sqlite", "projections.worker1.sqlite"} <= {n.removesuffix("-wal") for n in holders}:
            break
    else:
        raise AssertionError(f"the second worker never opened the person: {holders}")

    await one_call(workers, token, "forget_memory", {"id": stored["id"]})
    forgotten_at = time.monotonic()
    while True:
        holders = [p.name for p in user_files(workers.data_dir, folder) if needle in p.read_bytes()]
        if not holders:
            break
        assert time.monotonic() - forgotten_at < 2.0, f"still in {holders} 2 s after forget answered"
        time.sleep(0.05)
    found = await one_call(workers, token, "retrieve_context", {"query": "spare key heron", "limit": 5})
    assert stored["id"] not in [m["id"] for m in found["memories"]]


def test_tallies_metrics_and_the_rate_limit_hold_across_workers(tmp_path):
    # MEMORY_WORKERS, as a container would set it, rather than the flag.
    with ServerProcess(tmp_path / "data", extra_args=["--call-rate-limit", "60"],
                       env={"MEMORY_WORKERS": "2"}) as server:
        server.wait_ready(timeout=120)
        token = server.token("tess")

        async def calls() -> None:
            for _ in range(12):
                await one_call(server, token, "list_entities")

        asyncio.run(calls())
        served = calls_by_worker(server)
        assert len(served) == 2 and all(served.values()), served
        # Summed over both workers' files at scrape time, whichever worker answers the scrape.
        assert metric(server, "memory_tool_calls_total", tool="list_entities", outcome="ok") == 12
        # The limit is per person and per minute, across the workers: 60 answered, then 429.
        other = server.token("uma")
        answers = []
        for _ in range(63):
            with httpx2.Client(base_url=server.url, timeout=30) as http:  # a new connection each time
                answers.append(http.get("/api/v1/memories/search", params={"query": "x"},
                                        headers={"Authorization": f"Bearer {other}"}).status_code)
        assert answers == [200] * 60 + [429] * 3, answers
        assert server.stop() == 0
    # Each worker adds its own counts at shutdown: `memory stats` sees the sum.
    stats = subprocess.run([str(Path(sys.executable).parent / "memory"), "stats", "--json", "--data-dir",
                            str(tmp_path / "data")], capture_output=True, text=True, check=True)
    assert json.loads(stats.stdout)["tool_calls"]["list_entities"] == {"ok": 12, "error": 0}


def test_starting_with_fewer_workers_deletes_the_projection_files_no_worker_follows(tmp_path):
    folder = tmp_path / "users" / "abc"
    folder.mkdir(parents=True)
    names = ["events.sqlite", "projections.sqlite", "projections.sqlite-wal", "projections.worker1.sqlite",
             "projections.worker1.sqlite-wal", "projections.worker2.sqlite", "projections.worker2.sqlite-shm",
             "projections.worker12.sqlite"]
    for name in names:
        (folder / name).write_bytes(b"x")
    assert remove_replicas(tmp_path, keep=2) == 3
    assert sorted(p.name for p in folder.iterdir()) == sorted(names[:5])
    assert remove_replicas(tmp_path, keep=1) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["events.sqlite", "projections.sqlite",
                                                        "projections.sqlite-wal"]


async def test_a_killed_worker_is_replaced_on_its_own_slot_and_socket_and_calls_go_on(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--workers", "2"]) as server:
        server.wait_ready(timeout=120)
        token = server.token("kim")
        stored = await one_call(server, token, "store_memory", {"text": "Kim's bike is the green one"})
        first = sorted(server_pids(server.pid))
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)  # as the OOM killer would
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = server_pids(server.pid)
            if len(now) == 2 and first[0] not in now:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the killed worker was not replaced")
        # Every connection is answered again, whichever socket the kernel hands it to, and the
        # replacement took the freed slot: no third projection file appears.
        for _ in range(12):
            found = await one_call(server, token, "retrieve_context", {"query": "green bike", "limit": 3})
            assert stored["id"] in [m["id"] for m in found["memories"]]
        assert all(calls_by_worker(server).get(pid, 0) > 0 for pid in now), calls_by_worker(server)
        folder = next(path for path, owner in list_logs(server.data_dir) if owner.sub == "kim")
        assert sorted(p.name for p in folder.glob("projections*.sqlite")) == [
            "projections.sqlite", "projections.worker1.sqlite"]


def server_pids(pid: int) -> list[int]:
    """The live worker processes of the `memory serve` running as `pid` (not multiprocessing's
    resource tracker, not a dead worker not yet reaped)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            alive = stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
            spawned = b"spawn_main" in (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if alive and spawned and _parent_or_none(stat) == pid:
            pids.append(int(stat.parent.name))
    return pids


def _parent_or_none(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


async def test_workers_over_a_database_keep_every_log_in_it_and_read_each_others_writes(tmp_path, postgres_url):
    """`--workers 2 --database-url`: each worker appends to PostgreSQL (no log file on disk), and a
    memory stored through one is found through the other."""
    data_dir = tmp_path / "data"
    env = {"MEMORY_DATABASE_URL": postgres_url}
    with ServerProcess(data_dir, env=env, extra_args=["--workers", "2", "--call-rate-limit", "1000"]) as server:
        server.wait_ready(timeout=120)
        token = server.token("dora")
        stored = [await one_call(server, token, "store_memory", {"text": f"Dora's locker number is {n}0{n}"})
                  for n in range(6)]
        assert len(calls_by_worker(server)) == 2
        for memory in stored:
            found = await one_call(server, token, "fetch", {"id": memory["id"]})
            assert found["id"] == memory["id"]
    assert list((data_dir / "users").glob("*/events.sqlite")) == []
    verified = subprocess.run([str(Path(sys.executable).parent / "memory"), "verify", "--data-dir", str(data_dir),
                               "--database-url", postgres_url, "--user", "dora"],
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # 6 stores and 6 fetches, each an event of dora's log in the database.
    assert "12 events" in verified.stdout, verified.stdout
