"""Erasure end to end: forget_memory through a real server leaves the text in no byte it keeps.

A person stores a memory (and searches for it, fetches it, updates it) over MCP with the SDK
client and REST, then forgets it over MCP (and a second one over REST). Afterwards the text is in
no file of the data dir (logs, projections, FTS, embedding cache, WAL and SHM files, the AS
database), in no export (REST or CLI), and not in the server's own log at debug level; the
chain still verifies and shows the tombstone and the redacted seqs.
"""

import base64
import json
import subprocess

import anyio
import httpx2
import pytest
from hardening_util import MEMORY, log_rows, memory_cli
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from memory.server.process import ServerProcess

pytestmark = pytest.mark.slow

MARKER = "quixotic-pangolin"
SECRETS = {
    "mcp": f"The {MARKER} vault code is 4417, written behind the kitchen calendar",
    "rest": f"My {MARKER} therapist appointment moved to Thursday at nine",
}


def holding(root, needle: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


async def store_use_and_forget_over_mcp(server: ServerProcess, token: str) -> dict:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
            async def call(tool, arguments):
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.content
                return result.structured_content

            memory = await call("store_memory", {"text": SECRETS["mcp"], "entity": "home.vault", "tags": ["private"]})
            await call("store_memory", {"text": "An ordinary note about the weather"})
            found = await call("retrieve_context", {"query": f"where is the {MARKER} vault code"})
            assert found["memories"][0]["id"] == memory["id"]
            await call("fetch", {"id": memory["id"]})
            await call("update_memory", {"id": memory["id"], "text": SECRETS["mcp"] + f" ({MARKER} again)"})
            return await call("forget_memory", {"id": memory["id"]})


def test_a_memory_forgotten_through_the_server_leaves_no_byte_behind(tmp_path):
    data_dir, server_log = tmp_path / "data", tmp_path / "server.log"
    with ServerProcess(data_dir, log_file=server_log, extra_args=["--log-level", "debug"]) as server, \
            httpx2.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready()
        token = server.token("erin")
        headers = {"Authorization": f"Bearer {token}"}
        kept = http.post("/api/v1/memories", headers=headers, json={"text": "Erin's bike is in the shed"}).json()
        # asked before the memory existed: it returned nothing of it, and still quotes it
        early = http.get("/api/v1/memories/search", params={"query": "when is my THERAPIST appointment"},
                         headers=headers)
        assert early.status_code == 200
        over_rest = http.post("/api/v1/memories", headers=headers, json={"text": SECRETS["rest"]}).json()
        assert http.get("/api/v1/memories/search", params={"query": MARKER}, headers=headers).status_code == 200
        # shares no word with either secret, though it returns them: it keeps its query
        unrelated = http.get("/api/v1/memories/search", params={"query": "where is my bicycle parked"},
                             headers=headers).json()
        assert over_rest["id"] in json.dumps(unrelated)
        assert holding(data_dir, MARKER.encode()), "the text is on disk before it is forgotten"

        forgotten = anyio.run(store_use_and_forget_over_mcp, server, token)
        erased = http.delete(f"/api/v1/memories/{over_rest['id']}", params={"forget": "true"}, headers=headers)
        assert erased.status_code == 200, erased.text

        needles = [MARKER.encode(), *(s.encode() for s in SECRETS.values()), b"4417, written behind",
                   b"therapist", b"THERAPIST", b"pangolin"]
        for needle in needles:
            assert holding(data_dir, needle) == [], f"{needle!r} is still in the running server's files"
        export = http.get("/api/v1/export", headers=headers)
        assert export.status_code == 200 and kept["id"] in export.text
        assert b"where is my bicycle parked" in b"".join(
            base64.b64decode(e["payload"]) for e in export.json()["events"] if e["payload"])
        assert not any(n in export.content for n in needles)
        history = http.get(f"/api/v1/memories/{forgotten['memory_id']}/history", headers=headers).json()
        assert forgotten["tombstone_seq"] in [e["seq"] for e in history["entries"]]
        assert all(e["redacted"] for e in history["entries"] if e["seq"] in forgotten["redacted_seqs"])

    for needle in needles:
        assert holding(data_dir, needle) == [], f"{needle!r} is in the files after a clean stop"
        assert needle not in server_log.read_bytes(), f"{needle!r} is in the server's log"
    types = {seq: kind for seq, _, kind in log_rows(data_dir, "erin")}
    assert types[forgotten["tombstone_seq"]] == "memory.forgotten"

    bundle = tmp_path / "erin.json"
    assert memory_cli("export", "--user", "erin", "-o", str(bundle), data_dir=data_dir).returncode == 0
    assert not any(n in bundle.read_bytes() for n in needles)
    exported = subprocess.run([str(MEMORY), "verify-export", str(bundle), "--json"], capture_output=True, text=True)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    checked = json.loads(exported.stdout)
    assert checked["ok"] and set(forgotten["redacted_seqs"]) <= set(checked["redacted_seqs"])
    verified = memory_cli("verify", "--user", "erin", data_dir=data_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr

