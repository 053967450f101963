"""One request id per HTTP request, whichever way in: the response's X-Request-ID header and the
event the call appended name the same id, for REST, for an MCP tool call and for a web page; a
client's own sane id is kept, anything else is replaced."""

import json
import uuid

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from server_calls import bearer, call
from web_calls import PASSWORDS, Browser

pytestmark = pytest.mark.anyio
API = "/api/v1"


def _history(http: httpx2.Client, headers: dict[str, str], memory_id: str) -> list[dict]:
    response = http.get(f"{API}/memories/{memory_id}/history", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["entries"]


def _stored_by(entries: list[dict]) -> str:
    [stored] = [e for e in entries if e["type"] == "memory.stored"]
    return stored["request_id"]


def test_a_rest_call_gets_an_id_in_its_header_and_its_event(server, http):
    me = bearer(server.token(f"ids-{uuid.uuid4().hex[:12]}"))
    made = http.post(f"{API}/memories", json={"text": "Walks to work on Tuesdays"}, headers=me)
    assert made.status_code == 201, made.text
    given_id = made.headers["x-request-id"]
    uuid.UUID(given_id)  # none was sent: the server made one
    assert _stored_by(_history(http, me, made.json()["id"])) == given_id

    kept = http.post(f"{API}/memories", json={"text": "Cycles home on Thursdays"},
                     headers=me | {"X-Request-ID": "client-chose-this-1"})
    assert kept.headers["x-request-id"] == "client-chose-this-1"
    assert _stored_by(_history(http, me, kept.json()["id"])) == "client-chose-this-1"

    too_long = "x" * 129
    replaced = http.post(f"{API}/memories", json={"text": "Runs on Sundays"}, headers=me | {"X-Request-ID": too_long})
    assert replaced.headers["x-request-id"] != too_long
    uuid.UUID(replaced.headers["x-request-id"])
    assert _stored_by(_history(http, me, replaced.json()["id"])) == replaced.headers["x-request-id"]

    # An answer that appends nothing, a 404, still carries an id.
    missing = http.get(f"{API}/memories/{uuid.uuid4()}", headers=me)
    assert missing.status_code == 404 and uuid.UUID(missing.headers["x-request-id"])


async def test_an_mcp_tool_call_gets_an_id_in_its_header_and_its_event(server, http):
    token = server.token(f"ids-{uuid.uuid4().hex[:12]}")
    tool_calls: dict[str, str] = {}  # tool name -> x-request-id of the response to its call

    async def remember(response: httpx2.Response) -> None:
        body = response.request.content
        message = json.loads(body) if body else {}
        if isinstance(message, dict) and message.get("method") == "tools/call":
            tool_calls[message["params"]["name"]] = response.headers["x-request-id"]

    async with httpx2.AsyncClient(headers=bearer(token), timeout=60, event_hooks={"response": [remember]}) as client:
        async with Client(streamable_http_client(server.mcp_url, http_client=client)) as mcp:
            stored = await call(mcp, "store_memory", {"text": "Keeps the bike in the cellar"})
            await call(mcp, "fetch", {"id": stored["id"]})

    assert set(tool_calls) == {"store_memory", "fetch"}
    assert tool_calls["store_memory"] != tool_calls["fetch"]
    entries = _history(http, bearer(token), stored["id"])
    assert _stored_by(entries) == tool_calls["store_memory"]
    [fetched] = [e for e in entries if e["type"] == "memories.read"]
    assert fetched["request_id"] == tool_calls["fetch"]


def test_a_web_page_gets_an_id_in_its_header_and_its_event(web_server):
    browser = Browser(web_server.url)
    try:
        browser.log_in("alice", PASSWORDS["alice"])
        browser.get("/")
        added = browser.post("/memories", {"text": f"Waters the plants on Fridays {uuid.uuid4().hex}",
                                           "tags": "", "memory_type": "episodic"})
        assert added.status_code == 303, added.text
        memory_id = added.headers["location"].split("/memories/")[1].split("?")[0]
        request_id = added.headers["x-request-id"]
    finally:
        browser.close()
    with httpx2.Client(base_url=web_server.url, timeout=30) as http:
        assert _stored_by(_history(http, bearer(web_server.token("alice")), memory_id)) == request_id
