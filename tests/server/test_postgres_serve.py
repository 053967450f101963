"""`memory serve --database-url`: a real server whose logs live in a real PostgreSQL, driven by the
MCP SDK's client. Store, retrieve, forget; `memory verify`, `export` and `isolation-check` pass
against the database; a server started on an empty data dir (no projections) finds the memories,
rebuilt from the database."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import psycopg
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from server_calls import call, call_error

from memory.server.process import ServerProcess

pytestmark = pytest.mark.anyio

MEMORY = Path(sys.executable).parent / "memory"
SECRET = "the alarm code of the harbour shed is 8812"


def memory(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MEMORY), *args], capture_output=True, text=True, timeout=300)


@asynccontextmanager
async def mcp_client(server: ServerProcess, token: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
            yield client


def token(server: ServerProcess, database: list[str], user: str) -> str:
    made = memory("token", "--data-dir", str(server.data_dir), *database, "--user", user, "--public-url", server.url)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


async def test_a_server_on_postgres_stores_retrieves_forgets_and_rebuilds_from_the_database(tmp_path, postgres_url):
    database = ["--database-url", postgres_url, "--keys-dir", str(tmp_path / "keys")]
    first = ServerProcess(tmp_path / "first", extra_args=database).start()
    try:
        first.wait_ready()
        async with mcp_client(first, token(first, database, "alice")) as client:
            kept = await call(client, "store_memory", {"text": "I take my coffee black, no sugar"})
            secret = await call(client, "store_memory", {"text": SECRET})
            found = await call(client, "retrieve_context", {"query": "harbour shed alarm code"})
            assert found["memories"][0]["id"] == secret["id"]
            await call(client, "forget_memory", {"id": secret["id"]})
            assert "no memory with id" in await call_error(client, "fetch", {"id": secret["id"]})
        async with mcp_client(first, token(first, database, "bob")) as client:
            await call(client, "store_memory", {"text": "Bob waters the ferns on Fridays"})
    finally:
        first.stop()

    assert not list((tmp_path / "first").glob("users/*/events.sqlite")), "the logs must be in the database only"
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(DISTINCT log_id) FROM events").fetchone()[0] == 2
        assert not db.execute("SELECT 1 FROM events WHERE position(%s in payload) > 0", (b"harbour shed",)).fetchall()
    for command in (["verify"], ["isolation-check"], ["export", "--user", "alice", "-o", str(tmp_path / "alice.json")]):
        result = memory(*command, "--data-dir", str(tmp_path / "first"), *database)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    assert "verified 2 log(s)" in memory("verify", "--data-dir", str(tmp_path / "first"), *database).stdout
    exported = memory("verify-export", str(tmp_path / "alice.json"))
    assert exported.returncode == 0, exported.stdout + exported.stderr

    # Another server, nothing on its disk but what it makes: the projections come from the database.
    second = ServerProcess(tmp_path / "second", extra_args=database).start()
    try:
        second.wait_ready()
        async with mcp_client(second, token(second, database, "alice")) as client:
            found = await call(client, "retrieve_context", {"query": "how do I take my coffee"})
            info = await call(client, "get_context_info")
            assert "no memory with id" in await call_error(client, "fetch", {"id": secret["id"]})
        assert [m["id"] for m in found["memories"]][:1] == [kept["id"]]
        assert info["total_memories"] == 1
    finally:
        second.stop()


def test_a_database_that_cannot_be_reached_stops_serve_and_commands_with_one_line(tmp_path):
    unreachable = "postgresql://memory:hunter2@127.0.0.1:1/memory"
    for command in (["serve", "--port", "1"], ["verify"], ["migrate"]):
        result = memory(*command, "--data-dir", str(tmp_path / "data"), "--database-url", unreachable)
        assert result.returncode == 1, f"{command}: {result.stdout}{result.stderr}"
        assert "cannot use the database at postgresql://127.0.0.1:1/memory" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_a_database_url_must_be_postgresql_and_config_show_masks_its_password(tmp_path):
    wrong = memory("serve", "--data-dir", str(tmp_path), "--database-url", "mysql://db/memory")
    assert wrong.returncode == 2 and "postgresql://" in wrong.stderr
    shown = subprocess.run([str(MEMORY), "config", "show"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MEMORY_DATABASE_URL": "postgresql://memory:hunter2@db/memory"})
    assert 'database_url = "postgresql://memory:********@db/memory"' in shown.stdout
    assert "hunter2" not in shown.stdout
