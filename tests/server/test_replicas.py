"""Two `memory serve` replicas over one PostgreSQL database, behind a real round-robin load
balancer (Debian's haproxy): each keeps projections of its own and follows what the other
appended, so a memory stored through one is found through the other, both can write one person
at once without a gap or fork, and an erasure made through one leaves the other's files too: told
by NOTIFY, and again once a replica's listening connection was killed and came back."""

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx2
import pytest
from load_balancer import LoadBalancer
from postgres_server import listening_sessions, terminate
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from server_calls import call, wait_healthy

from memory.server.process import ServerProcess, free_port
from memory.signing import KeyRing

pytestmark = pytest.mark.anyio

MEMORY = Path(sys.executable).parent / "memory"
SECRET = "the spare key of the boathouse hangs behind the blue lantern"


@contextmanager
def replicas(tmp_path: Path, database_url: str, env: dict[str, str] | None = None
             ) -> Iterator[tuple[LoadBalancer, list[ServerProcess]]]:
    dirs = [tmp_path / name / "data" for name in ("a", "b")]
    for folder in dirs:
        folder.mkdir(parents=True)
    # One keys directory for both (in production a mounted secret: --keys-dir), one public URL: the balancer's.
    keys = tmp_path / "keys"
    KeyRing(dirs[0], keys_dir=keys)
    ports = [free_port(), free_port()]
    with LoadBalancer([f"http://127.0.0.1:{port}" for port in ports]) as balancer:
        env = {"MEMORY_DATABASE_URL": database_url, "MEMORY_KEYS_DIR": str(keys), **(env or {})}
        servers = [ServerProcess(folder, port=port, public_url=balancer.url, env=env)
                   for folder, port in zip(dirs, ports)]
        try:
            for server in servers:
                server.start()
            for server in servers:
                wait_healthy(f"http://127.0.0.1:{server.port}", server, timeout=60.0)
            yield balancer, servers
        finally:
            for server in servers:
                server.stop()


@asynccontextmanager
async def client_at(url: str, token: str) -> AsyncIterator[Client]:
    # The replica's own address, or the balancer's; the Host header stays the public one's.
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            yield client


def _direct(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


def _files_holding(folder: Path, text: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and text in p.read_bytes()]


async def test_replicas_behind_a_balancer_read_each_others_writes_share_a_log_and_erase_everywhere(
        tmp_path, postgres_url):
    with replicas(tmp_path, postgres_url) as (balancer, (first, second)):
        token = first.token("alice")
        # Through each replica directly: a store on one is found by the next call on the other.
        async with client_at(_direct(first), token) as one, client_at(_direct(second), token) as two:
            for i, (writer, reader) in enumerate(((one, two), (two, one), (one, two))):
                stored = await call(writer, "store_memory", {"text": f"Project {i} of alice is called Heron-{i}"})
                found = await call(reader, "retrieve_context", {"query": f"what is project {i} called"})
                assert found["memories"] and found["memories"][0]["id"] == stored["id"], (i, found)
            secret = await call(one, "store_memory", {"text": SECRET})
            found = await call(two, "retrieve_context", {"query": "where is the boathouse key"})
            assert found["memories"][0]["id"] == secret["id"]

        # Through the balancer, both replicas write one person at once: one chain, no gap or fork.
        async def writer(n: int) -> list[str]:
            async with client_at(balancer.url, token) as client:
                return [(await call(client, "store_memory", {"text": f"Note {n}-{k}: pack item {n * 100 + k}"}))["id"]
                        for k in range(8)]

        written = await asyncio.gather(*(writer(n) for n in range(4)))
        assert len({i for ids in written for i in ids}) == 32
        async with client_at(balancer.url, token) as client:
            info = await call(client, "get_context_info")
            assert info["total_memories"] == 3 + 1 + 32

            # Forget through the first replica: within 2 s the text is in no file of either.
            async with client_at(_direct(first), token) as one:
                await call(one, "forget_memory", {"id": secret["id"]})
            deadline = time.monotonic() + 2.0
            while _files_holding(second.data_dir, SECRET.encode()) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert _files_holding(second.data_dir, SECRET.encode()) == []
            assert _files_holding(first.data_dir, SECRET.encode()) == []
            found = await call(client, "retrieve_context", {"query": "where is the boathouse key", "min_score": 0})
            assert secret["id"] not in [m["id"] for m in found["memories"]]

    verified = subprocess.run([str(MEMORY), "verify", "--data-dir", str(tmp_path / "a" / "data"),
                               "--database-url", postgres_url, "--keys-dir", str(tmp_path / "keys")], capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    isolation = subprocess.run([str(MEMORY), "isolation-check", "--data-dir", str(tmp_path / "a" / "data"),
                                "--database-url", postgres_url, "--keys-dir", str(tmp_path / "keys")], capture_output=True, text=True, timeout=300)
    assert isolation.returncode == 0, isolation.stdout + isolation.stderr


async def test_an_erasure_reaches_the_other_replica_by_notify_even_after_its_listener_was_killed(
        tmp_path, postgres_url):
    # The poll every 30 s: within the 2 s asked, only a notice carries the erasure to the second replica.
    with replicas(tmp_path, postgres_url, {"MEMORY_LOG_POLL_SECONDS": "30"}) as (_, (first, second)):
        token = first.token("alice")
        assert await _until(lambda: len(listening_sessions(postgres_url)) == 2, 30), "the replicas never listened"
        async with client_at(_direct(first), token) as one, client_at(_direct(second), token) as two:
            for round_, text in enumerate((SECRET, "the bicycle lock opens with 7-7-3-1")):
                if round_:
                    # Both listeners' sessions ended by the database: each reconnects and listens again.
                    old = listening_sessions(postgres_url)
                    terminate(postgres_url, old)
                    assert await _until(lambda: len(new := listening_sessions(postgres_url)) == 2
                                        and set(new).isdisjoint(old), 30), "the listeners did not come back"
                stored = await call(one, "store_memory", {"text": text})
                found = await call(two, "retrieve_context", {"query": text})
                assert found["memories"][0]["id"] == stored["id"]
                assert _files_holding(second.data_dir, text.encode()), "the second replica never held the text"
                await call(one, "forget_memory", {"id": stored["id"]})
                assert await _until(lambda: not _files_holding(second.data_dir, text.encode()), 2.0), \
                    (round_, _files_holding(second.data_dir, text.encode()))


async def _until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_replica_killed_under_load_loses_no_acknowledged_store(tmp_path, postgres_url):
    with replicas(tmp_path, postgres_url) as (balancer, (first, second)):
        token = first.token("alice")
        acknowledged: list[str] = []

        async def writer(n: int) -> None:
            for k in range(25):
                try:
                    async with client_at(balancer.url, token) as client:
                        result = await client.call_tool("store_memory", {"text": f"Load {n}-{k}: crate {n * 1000 + k}"})
                except Exception:  # noqa: BLE001 - the killed replica's calls fail; that is the point
                    continue
                if not result.is_error:
                    acknowledged.append(result.structured_content["id"])

        async def killer() -> None:
            while len(acknowledged) < 20:
                await asyncio.sleep(0.05)
            second.kill()  # SIGKILL mid-load: no shutdown code runs

        await asyncio.gather(killer(), *(writer(n) for n in range(3)))
        assert len(acknowledged) >= 20
        async with client_at(_direct(first), token) as client:
            for memory_id in acknowledged:
                await call(client, "fetch", {"id": memory_id})
    verified = subprocess.run([str(MEMORY), "verify", "--data-dir", str(tmp_path / "a" / "data"),
                               "--database-url", postgres_url, "--keys-dir", str(tmp_path / "keys")], capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
