"""Memory hygiene and import through the adapters: duplicates, similar memories and supersedes
over MCP and REST, REST's memory list and import, and `memory import` on the command line."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from server_calls import bearer, call

API = "/api/v1"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture()
def user(server) -> str:
    return server.token(f"hygiene-{uuid.uuid4().hex[:12]}")


@pytest.mark.anyio
async def test_store_memory_answers_a_duplicate_with_the_existing_memory_and_lists_similar_ones(connect, user):
    async with connect(user) as client:
        first = await call(client, "store_memory", {"text": "Drinks green tea in the afternoon."})
        again = await call(client, "store_memory", {"text": "drinks green tea in the afternoon"})
        close = await call(client, "store_memory", {"text": "Drinks green tea every afternoon at four."})
        forced = await call(client, "store_memory", {"text": "Drinks green tea in the afternoon.",
                                                     "allow_duplicate": True})
        history = await call(client, "memory_history", {"id": first["id"]})
        info = await call(client, "get_context_info")
    assert first["duplicate_of"] is None and first["similar"] == []
    assert again["duplicate_of"] == first["id"] and again["id"] == first["id"]
    assert close["duplicate_of"] is None and close["similar"][0]["id"] == first["id"]
    assert 0.7 <= close["similar"][0]["score"] < 1
    assert forced["id"] != first["id"] and forced["similar"][0]["id"] == first["id"]
    assert "memory.deduplicated" in [e["type"] for e in history["entries"]]
    assert info["total_memories"] == 3


@pytest.mark.anyio
async def test_a_superseded_memory_leaves_retrieval_until_include_superseded(connect, user):
    async with connect(user) as client:
        old = await call(client, "store_memory", {"text": "The standup is at 9:30."})
        new = await call(client, "store_memory", {"text": "The standup moved to 10:00.", "supersedes": [old["id"]]})
        default = await call(client, "retrieve_context", {"query": "when is the standup"})
        everything = await call(client, "retrieve_context", {"query": "when is the standup",
                                                             "include_superseded": True})
        third = await call(client, "store_memory", {"text": "The standup is on Zoom."})
        await call(client, "update_memory", {"id": third["id"], "supersedes": [new["id"]]})
        after = await call(client, "retrieve_context", {"query": "when is the standup"})
    assert [m["id"] for m in default["memories"]] == [new["id"]]
    assert {m["id"] for m in everything["memories"]} == {old["id"], new["id"]}
    assert [m["id"] for m in after["memories"]] == [third["id"]]


def test_rest_store_answers_200_with_duplicate_of_and_201_with_similar(http, server):
    me = bearer(server.token(f"rest-{uuid.uuid4().hex[:12]}"))
    first = http.post(f"{API}/memories", json={"text": "Plays the piano on weekends."}, headers=me)
    again = http.post(f"{API}/memories", json={"text": "Plays the piano on weekends"}, headers=me)
    close = http.post(f"{API}/memories", json={"text": "Practises piano every Saturday."}, headers=me)
    forced = http.post(f"{API}/memories", json={"text": "Plays the piano on weekends", "allow_duplicate": True},
                       headers=me)
    replaced = http.post(f"{API}/memories", json={"text": "Plays the guitar on weekends now.",
                                                 "supersedes": [first.json()["id"]]}, headers=me)
    assert first.status_code == 201 and first.json()["duplicate_of"] is None
    assert again.status_code == 200 and again.json()["duplicate_of"] == first.json()["id"]
    assert close.status_code == 201 and close.json()["similar"][0]["id"] == first.json()["id"]
    assert forced.status_code == 201 and forced.json()["id"] != first.json()["id"]
    assert forced.json()["similar"][0]["id"] == first.json()["id"]
    assert replaced.status_code == 201
    assert http.get(f"{API}/memories/{first.json()['id']}", headers=me).json()["status"] == "superseded"


def test_rest_lists_memories_with_filters_and_a_cursor(http, server):
    me = bearer(server.token(f"rest-{uuid.uuid4().hex[:12]}"))
    ids = [http.post(f"{API}/memories", json={"text": f"Reading list item {n}", "tags": ["books"]},
                     headers=me).json()["id"] for n in range(3)]
    http.post(f"{API}/memories", json={"text": "Not a book"}, headers=me)
    first = http.get(f"{API}/memories", params={"tag": "books", "limit": 2}, headers=me).json()
    second = http.get(f"{API}/memories", params={"tag": "books", "limit": 2, "cursor": first["next_cursor"]},
                      headers=me).json()
    scoped = http.get(f"{API}/memories", params={"scope": "project"}, headers=me).json()
    bad = http.get(f"{API}/memories", params={"limit": 0}, headers=me)
    assert [m["id"] for m in first["memories"] + second["memories"]] == ids[::-1]
    assert second["next_cursor"] is None
    assert scoped["memories"] == []
    assert bad.status_code == 400


def test_rest_import_is_idempotent_and_refuses_a_bad_file_whole(http, server):
    me = bearer(server.token(f"rest-{uuid.uuid4().hex[:12]}"))
    data = "\n".join(json.dumps({"text": t}) for t in ("Has a cat named Miso.", "Lives in Lisbon."))
    first = http.post(f"{API}/import", json={"format": "jsonl", "data": data}, headers=me)
    second = http.post(f"{API}/import", json={"format": "jsonl", "data": data}, headers=me)
    bad = http.post(f"{API}/import", json={"format": "jsonl", "data": data + '\n{"txt": "typo"}'}, headers=me)
    listed = http.get(f"{API}/memories", headers=me).json()
    for body in (b'{"format": "jsonl", "data": "\\ud800"}', b'{"format": "export", "data": "{}"}',
                 b'{"format": "csv", "data": "a,b"}', b'{"format": "mem0"}'):
        refused = http.post(f"{API}/import", content=body, headers=me | {"Content-Type": "application/json"})
        assert refused.status_code == 400, (body, refused.text)
    assert first.status_code == 200 and len(first.json()["imported"]) == 2
    assert second.json()["imported"] == [] and second.json()["already_imported"] == 2
    assert bad.status_code == 400 and "line 3" in bad.json()["detail"]
    assert len(listed["memories"]) == 2


def test_the_memory_import_command_imports_a_mem0_file_once(tmp_path: Path):
    export = tmp_path / "mem0.json"
    export.write_text(json.dumps([{"id": "m-1", "memory": "Is allergic to nuts", "categories": ["health"],
                                   "created_at": "2024-07-20T01:42:47-07:00", "updated_at": None,
                                   "metadata": None, "user_id": "alice"}]))
    command = [str(Path(sys.executable).parent / "memory"), "import", "--data-dir", str(tmp_path / "data"),
               "--user", "alice", "--format", "mem0", str(export)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    export.write_text("[{\"id\": 1}]")
    bad = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "imported 1 of 1 record(s)" in first.stdout
    assert "imported 0 of 1 record(s)" in second.stdout and "1 imported before" in second.stdout
    assert bad.returncode != 0 and "record 1: memory must be a non-empty string" in bad.stderr
