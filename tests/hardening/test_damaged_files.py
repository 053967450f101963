"""Files damaged while the server is stopped: derived data is rebuilt, a damaged log is fenced off.

A projection database deleted, or overwritten with garbage, is rebuilt from the log when the
server starts again, and its person finds every memory. An event log with flipped bytes in a
row's header or payload stops that one person's calls with a clear error (REST 503 with a
message, an MCP tool error), everybody else is served, and `memory verify` names the seq.
"""

import os
import shutil
import sqlite3
from contextlib import closing

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from hardening_util import memory_cli, user

from memory.log import log_path
from memory.server.process import ServerProcess
from projections.base import PROJECTIONS_FILE

pytestmark = pytest.mark.slow

PEOPLE = {
    "alice": "alice keeps the spare key under the flowerpot",
    "deleted": "the projection of this person was deleted",
    "garbled": "the projection of this person was overwritten with garbage",
    "bystander": "nothing happened to this person's files",
}


def folder(data_dir, name):
    return log_path(data_dir, user(name)).parent


def flip_header_byte(path, seq: int) -> None:
    # Exactly what someone (or a bad disk) with the file could do: the append-only triggers
    # are dropped to get the change in; the server recreates them when it opens the log.
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TRIGGER events_change_only_by_redaction")
        header = bytearray(db.execute("SELECT header FROM events WHERE seq = ?", (seq,)).fetchone()[0])
        header[len(header) // 2] ^= 0x01
        db.execute("UPDATE events SET header = ? WHERE seq = ?", (bytes(header), seq))
        db.commit()


def flip_payload_byte_on_disk(path, needle: bytes) -> None:
    """Bit rot: one byte of a payload changed in the file itself, below SQLite."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0, "the payload should be in the main file after a clean stop"
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A data dir where each person stored three memories (and read once), cleanly stopped."""
    data_dir = tmp_path_factory.mktemp("damaged") / "data"
    ids = {}
    with ServerProcess(data_dir) as server, httpx2.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready()
        for name, text in PEOPLE.items():
            headers = {"Authorization": f"Bearer {server.token(name)}"}
            ids[name] = [http.post("/api/v1/memories", headers=headers, json={"text": t}).json()["id"]
                         for t in (text, f"{name}'s second note", f"{name}'s third note")]
            assert http.get("/api/v1/memories/search", params={"query": "note"}, headers=headers).status_code == 200
    return data_dir, ids


@pytest.mark.parametrize("damage", ["header", "payload"])
def test_a_damaged_log_fences_off_its_person_and_rebuilt_projections_serve_the_others(stored, tmp_path, damage):
    data_dir = tmp_path / "data"
    shutil.copytree(stored[0], data_dir)
    ids = stored[1]
    alice_log = log_path(data_dir, user("alice"))
    if damage == "header":
        flip_header_byte(alice_log, 2)
    else:
        flip_payload_byte_on_disk(alice_log, b"spare key under the flowerpot")
    damaged_seq = 2 if damage == "header" else 1
    (folder(data_dir, "deleted") / PROJECTIONS_FILE).unlink()
    (folder(data_dir, "garbled") / PROJECTIONS_FILE).write_bytes(os.urandom(64 * 1024))

    with ServerProcess(data_dir, log_file=tmp_path / "server.log") as server, \
            httpx2.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready()

        def headers(name):
            return {"Authorization": f"Bearer {server.token(name)}"}

        for attempt in range(2):  # and it stays fenced off: nothing is appended on top of the damage
            answer = http.get("/api/v1/memories/search", params={"query": "key"}, headers=headers("alice"))
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "log_integrity"
            assert f"seq {damaged_seq}" in answer.json()["detail"]
        write = http.post("/api/v1/memories", headers=headers("alice"), json={"text": "on top of the damage"})
        assert write.status_code == 503

        message = anyio.run(mcp_tool_error, server, "alice")
        assert "integrity" in message and f"seq {damaged_seq}" in message, message

        for name in ("deleted", "garbled", "bystander"):
            found = http.get("/api/v1/memories/search", params={"query": PEOPLE[name], "limit": 10},
                             headers=headers(name))
            assert found.status_code == 200, found.text
            assert {hit["id"] for hit in found.json()["results"]} == set(ids[name])
            assert http.post("/api/v1/memories", headers=headers(name), json={"text": "still served"}).status_code == 201

    with closing(sqlite3.connect(f"file:{alice_log}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT max(seq) FROM events").fetchone()[0] == 4  # 3 stores and a read, no more
    verified = memory_cli("verify", data_dir=data_dir)
    assert verified.returncode == 1
    failures = [line for line in verified.stderr.splitlines() if line.startswith("FAIL")]
    assert failures and all("alice" in line for line in failures)
    assert any(f"seq {damaged_seq}:" in line for line in failures), verified.stderr
    assert len([line for line in verified.stdout.splitlines() if line.startswith("ok ")]) == 3, verified.stdout


async def mcp_tool_error(server: ServerProcess, name: str) -> str:
    """The message of the tool error get_context_info answers `name` with, through the SDK client."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {server.token(name)}"}, timeout=60) as http:
        async with Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
            result = await client.call_tool("get_context_info", {})
    assert result.is_error
    return " ".join(getattr(c, "text", "") for c in result.content)
