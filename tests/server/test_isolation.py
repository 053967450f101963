"""Two users on one server never see each other's memories, through MCP or REST: another user's
id is "not found", word for word as an id that never existed."""

import uuid

import pytest
from server_calls import MODES, bearer, call, call_error


def not_found_text(message: str, memory_id: str) -> str:
    return message.replace(memory_id, "<id>")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_another_users_memory_is_invisible_through_every_mcp_tool(connect, server, mode):
    marker = uuid.uuid4().hex
    owner, other = server.token(f"owner-{marker}"), server.token(f"other-{marker}")
    async with connect(owner, mode) as client:
        mine = await call(client, "store_memory", {"text": f"Private diary entry {marker}"})
    missing = str(uuid.uuid4())
    async with connect(other, mode) as client:
        hits = await call(client, "search", {"query": f"diary entry {marker}"})
        context = await call(client, "retrieve_context", {"query": marker})
        info = await call(client, "get_context_info")
        errors = {}
        for tool, arguments in [
            ("fetch", {"id": "{id}"}), ("delete_memory", {"id": "{id}"}), ("forget_memory", {"id": "{id}"}),
            ("memory_history", {"id": "{id}"}), ("update_memory", {"id": "{id}", "text": "mine now"}),
        ]:
            for memory_id in (mine["id"], missing):
                args = {k: (memory_id if v == "{id}" else v) for k, v in arguments.items()}
                errors[(tool, memory_id == missing)] = not_found_text(await call_error(client, tool, args),
                                                                      memory_id)
        own = await call(client, "store_memory", {"text": "mine"})
        link = await call_error(client, "link_memories", {"source_id": own["id"], "target_id": mine["id"],
                                                          "link_type": "supports"})
    assert hits == {"results": []}
    assert context["memories"] == [] or all(m["id"] != mine["id"] for m in context["memories"])
    assert info["total_memories"] == 0
    for tool in ("fetch", "delete_memory", "forget_memory", "memory_history", "update_memory"):
        assert errors[(tool, False)] == errors[(tool, True)], tool
        assert "no memory with id" in errors[(tool, False)]
    assert "no memory with id" in link
    async with connect(owner, mode) as client:
        still = await call(client, "fetch", {"id": mine["id"]})
    assert still["text"] == f"Private diary entry {marker}"


def test_another_users_memory_is_404_through_every_rest_endpoint(http, server):
    marker = uuid.uuid4().hex
    owner, other = bearer(server.token(f"owner-{marker}")), bearer(server.token(f"other-{marker}"))
    mine = http.post("/api/v1/memories", json={"text": f"Private {marker}"}, headers=owner).json()
    missing = str(uuid.uuid4())
    for memory_id in (mine["id"], missing):
        responses = [
            http.get(f"/api/v1/memories/{memory_id}", headers=other),
            http.patch(f"/api/v1/memories/{memory_id}", json={"text": "x"}, headers=other),
            http.delete(f"/api/v1/memories/{memory_id}", headers=other),
            http.delete(f"/api/v1/memories/{memory_id}?forget=true", headers=other),
            http.get(f"/api/v1/memories/{memory_id}/history", headers=other),
        ]
        assert [r.status_code for r in responses] == [404] * 5
        assert {r.json()["detail"].replace(memory_id, "<id>") for r in responses} == {"no memory with id '<id>'"}
    search = http.get("/api/v1/memories/search", params={"query": f"Private {marker}"}, headers=other).json()
    assert search == {"results": []}
    exported = http.get("/api/v1/export", headers=other).text
    assert marker not in exported
    assert http.get(f"/api/v1/memories/{mine['id']}", headers=owner).status_code == 200
