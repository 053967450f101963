"""The server's log: one JSON object a line, a line per request and per tool call with who (a hash),
what, how long and how it ended, and never the memory text or the query."""

import json
import uuid
from html import unescape
from re import findall

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from server_calls import call, call_error
from web_calls import Browser, add_user

from memory.identity import Identity
from memory.server.process import ServerProcess

pytestmark = pytest.mark.anyio
_HIDDEN = r'<input type="hidden" name="([^"]+)" value="([^"]*)">'


async def test_requests_and_tool_calls_are_logged_as_json_without_memory_text(tmp_path):
    secret_text = f"Alice hides the spare key under the blue flowerpot {uuid.uuid4().hex}"
    secret_query = f"where is the spare key {uuid.uuid4().hex}"
    log_file = tmp_path / "server.log"
    server = ServerProcess(tmp_path / "data", log_file=log_file, extra_args=["--log-level", "info"])
    with server:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {server.token('alice')}", "X-Request-ID": "req-from-client-1"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with Client(streamable_http_client(server.mcp_url, http_client=http)) as client:
                stored = await call(client, "store_memory", {"text": secret_text})
                await call(client, "retrieve_context", {"query": secret_query})
                await call_error(client, "fetch", {"id": "no-such-memory"})
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) and line["time"] and line["level"] for line in lines)

    alice = Identity("local", "alice").key
    tools = {line["tool"]: line for line in lines if line.get("event") == "tool_call"}
    assert tools["store_memory"]["outcome"] == "ok" and tools["fetch"]["outcome"] == "error"
    for line in tools.values():
        assert line["user"] == alice and line["request_id"] == "req-from-client-1"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    requests = [line for line in lines if line.get("event") == "request" and line["path"] == "/mcp"]
    assert requests and all(r["user"] == alice and r["status"] == 200 and r["method"] == "POST" for r in requests)
    # The start-up polling of /healthz is a probe, not traffic: it stays out of the INFO log.
    assert not any(line.get("path") == "/healthz" for line in lines)

    assert secret_text not in text and secret_query not in text
    assert "spare key" not in text and "alice" not in text.lower().replace(alice, "")
    assert stored["id"]  # the store did happen: the text is in the log of events, just not in this one


def test_a_server_at_a_terminal_writes_plain_lines_not_json(tmp_path):
    import os
    import pty
    import select
    import subprocess
    import sys
    import time
    from pathlib import Path

    from memory.server.process import free_port

    terminal_side, server_side = pty.openpty()
    memory = Path(sys.executable).parent / "memory"
    process = subprocess.Popen([str(memory), "serve", "--data-dir", str(tmp_path / "data"), "--port",
                                str(free_port("127.0.0.1"))], stdout=server_side, stderr=server_side)
    os.close(server_side)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"\n" not in seen and time.monotonic() < deadline:
            if select.select([terminal_side], [], [], 1)[0]:
                seen += os.read(terminal_side, 4096)
    finally:
        process.terminate()
        process.wait(15)
        os.close(terminal_side)
    first = seen.decode(errors="replace").splitlines()[0]
    assert not first.lstrip().startswith("{") and " INFO " in first, first


def test_critical_is_a_log_level_the_server_accepts_and_it_silences_info_and_warnings(tmp_path):
    log_file = tmp_path / "server.log"
    with ServerProcess(tmp_path / "data", log_file=log_file, extra_args=["--log-level", "critical"]) as server:
        server.wait_ready()
        assert httpx2.get(f"{server.url}/api/v1/memories/search", params={"query": "x"}, timeout=10).status_code == 401
    assert log_file.read_text().strip() == ""


async def test_sign_in_lines_name_the_account_by_its_hash_never_by_its_name(tmp_path):
    log_file = tmp_path / "server.log"
    add_user(tmp_path / "data", "rosalind", "rosalind-password-1")
    server = ServerProcess(tmp_path / "data", log_file=log_file, extra_args=["--log-level", "info"])
    with server, httpx2.Client(base_url=server.url, timeout=30) as http:
        web = Browser(server.url)
        assert web.log_in("rosalind", "wrong-password-1").status_code == 401
        assert web.log_in("rosalindo", "wrong-password-1").status_code == 401
        web.close()
        client_id = http.post("/register", json={"redirect_uris": ["https://chatgpt.com/cb"],
                                                 "token_endpoint_auth_method": "none"}).json()["client_id"]
        login = http.get("/authorize", params={
            "response_type": "code", "client_id": client_id, "redirect_uri": "https://chatgpt.com/cb",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"})
        fields = {k: unescape(v) for k, v in findall(_HIDDEN, login.text)}
        assert http.post("/authorize/login", data={**fields, "username": "rosalind",
                                                   "password": "wrong-password-2"}).status_code == 401
        consent = http.post("/authorize/login", data={**fields, "username": "rosalind",
                                                      "password": "rosalind-password-1"})
        fields = {k: unescape(v) for k, v in findall(_HIDDEN, consent.text)}
        assert http.post("/authorize/consent", data={**fields, "approve": "yes"}).status_code == 302
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]

    failed = [line for line in lines if "failed" in line["message"] and "sign-in" in line["message"]]
    allowed = [line for line in lines if "allowed" in line["message"]]
    assert [line["user"] for line in failed] == [Identity("local", n).key for n in ("rosalind", "rosalindo",
                                                                                     "rosalind")]
    assert [line["user"] for line in allowed] == [Identity("local", "rosalind").key]
    assert "rosalind" not in text
