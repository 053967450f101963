"""The MCP tools over real HTTP, through the SDK's own client in both protocol modes."""

import json
import uuid

import pytest
from server_calls import MODES, call, call_error, log_lengths

from memory.commands import FIXED_FIELDS, MemoryFilter
from memory.model import Memory, MemoryFields
from memory.server.mcp_tools import DESTRUCTIVE_TOOLS, READ_ONLY_TOOLS, TOOL_NAMES

pytestmark = pytest.mark.anyio

ALL_TOOLS = {
    "search", "fetch", "store_memory", "retrieve_context", "set_project", "get_context_info", "link_memories",
    "list_entities", "search_entities", "delete_memory", "update_memory", "sync_session", "register_entity",
    "forget_memory", "memory_history",
}


@pytest.fixture()
def user(server) -> str:
    """A token for a user nobody has used yet, so a test sees only its own memories."""
    return server.token(f"user-{uuid.uuid4().hex[:12]}")


def text_json(result) -> dict:
    (item,) = result.content
    assert item.type == "text"
    return json.loads(item.text)


@pytest.mark.parametrize("mode", MODES)
async def test_the_server_lists_all_fifteen_tools_with_hints_and_output_schemas(connect, alice, mode):
    async with connect(alice, mode) as client:
        listed = (await client.list_tools()).tools
    assert {t.name for t in listed} == ALL_TOOLS == set(TOOL_NAMES)
    for tool in listed:
        hints = tool.annotations
        assert hints is not None, tool.name
        assert hints.read_only_hint is (tool.name in READ_ONLY_TOOLS), tool.name
        assert hints.destructive_hint is (tool.name in DESTRUCTIVE_TOOLS), tool.name
        assert hints.open_world_hint is False, tool.name
        assert tool.output_schema and tool.output_schema.get("type") == "object", tool.name
        assert tool.description and len(tool.description) > 80, tool.name
        assert "Example" in tool.description or tool.name == "get_context_info", tool.name


def test_read_only_and_destructive_hints_are_the_ones_the_issue_names():
    assert READ_ONLY_TOOLS == {"search", "fetch", "retrieve_context", "get_context_info", "list_entities",
                               "search_entities", "memory_history"}
    assert DESTRUCTIVE_TOOLS == {"delete_memory", "forget_memory", "update_memory"}


async def test_enum_arguments_list_their_values_in_the_input_schema(connect, alice):
    async with connect(alice) as client:
        store = next(t for t in (await client.list_tools()).tools if t.name == "store_memory")
    memory_type = store.input_schema["properties"]["memory_type"]
    assert memory_type["enum"] == ["core_identity", "project_context", "task_instruction", "episodic"]
    assert store.input_schema["required"] == ["text"]


async def test_the_tools_schemas_derive_from_the_one_definition_of_a_memorys_fields(connect, alice):
    async with connect(alice) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    fields = set(MemoryFields.__struct_fields__)
    store, update = tools["store_memory"].input_schema["properties"], tools["update_memory"].input_schema["properties"]
    assert fields <= store.keys()
    assert update.keys() >= fields - set(FIXED_FIELDS) and not update.keys() & set(FIXED_FIELDS)
    assert set(MemoryFilter.__struct_fields__) <= tools["retrieve_context"].input_schema["properties"].keys()
    # The shape's constraints and descriptions travel with it, to every tool that takes the field.
    for properties in (store, update):
        assert (properties["priority"]["minimum"], properties["priority"]["maximum"]) == (0, 10)
        assert "ISO 8601" in properties["occurred_at"]["description"]
    for name in ("store_memory", "update_memory", "delete_memory"):
        assert set(Memory.__struct_fields__) <= tools[name].output_schema["properties"].keys(), name
    # No schema sends an assistant behind a reference: every enum lists its values where it is used.
    assert "$ref" not in json.dumps([t.input_schema for t in tools.values()])
    # What null may clear is read off the update's types: the fields that allow None.
    assert set(tools["update_memory"].input_schema["properties"]["clear"]["items"]["enum"]) == {
        "entity", "status", "occurred_at"}


async def test_update_memory_reads_a_null_argument_as_not_given(connect, user):
    async with connect(user) as client:
        stored = await call(client, "store_memory", {"text": "Ship on Friday", "entity": "release"})
        updated = await call(client, "update_memory", {"id": stored["id"], "text": None, "entity": None,
                                                       "priority": 7})
    assert updated["text"] == "Ship on Friday" and updated["entity"] == "release" and updated["priority"] == 7


async def test_a_list_sent_as_a_json_string_is_read_as_the_list_and_a_text_stays_text(connect, user):
    async with connect(user) as client:
        stored = await call(client, "store_memory", {"text": "[draft] the plan", "tags": '["plan", "draft"]',
                                                     "colour": "ignored, as the SDK's own models ignore it"})
        refused = await call_error(client, "store_memory", {"text": "x", "priority": 11})
    assert stored["text"] == "[draft] the plan" and stored["tags"] == ["plan", "draft"]
    assert "priority" in refused and "10" in refused


@pytest.mark.parametrize("mode", MODES)
async def test_search_answers_the_chatgpt_shape_in_structured_content_and_one_text_item(connect, server, user, mode):
    async with connect(user, mode) as client:
        stored = await call(client, "store_memory", {"text": "Loves hiking in the Alps every summer"})
        result = await client.call_tool("search", {"query": "mountain hiking"})
    assert not result.is_error
    assert result.structured_content == text_json(result)
    assert set(result.structured_content) == {"results"}
    (hit,) = result.structured_content["results"]
    assert set(hit) == {"id", "title", "url"}
    assert hit == {"id": stored["id"], "title": "Loves hiking in the Alps every summer",
                   "url": f"{server.url}/memories/{stored['id']}"}


@pytest.mark.parametrize("mode", MODES)
async def test_fetch_answers_the_chatgpt_shape_with_the_whole_text(connect, server, user, mode):
    text = "Project kickoff notes\n" + "detail " * 600
    async with connect(user, mode) as client:
        stored = await call(client, "store_memory", {"text": text, "tags": ["notes"], "entity": "acme.kickoff"})
        result = await client.call_tool("fetch", {"id": stored["id"]})
    assert not result.is_error
    fetched = result.structured_content
    assert fetched == text_json(result)
    assert set(fetched) == {"id", "title", "text", "url", "metadata"}
    assert fetched["id"] == stored["id"]
    assert fetched["title"] == "Project kickoff notes"
    assert fetched["text"] == text.strip()
    assert fetched["url"] == f"{server.url}/memories/{stored['id']}"
    assert fetched["url"].startswith("http")
    assert fetched["metadata"]["tags"] == ["notes"]
    assert fetched["metadata"]["entity"] == "acme.kickoff"


async def test_store_memory_returns_the_memory_and_appends_its_event(connect, user):
    async with connect(user) as client:
        before = (await call(client, "get_context_info"))["events"]
        stored = await call(client, "store_memory", {
            "text": "Prefers short answers", "memory_type": "core_identity", "priority": 5,
            "occurred_at": "2026-05-08",
        })
        history = await call(client, "memory_history", {"id": stored["id"]})
        after = (await call(client, "get_context_info"))["events"]
    assert stored["memory_type"] == "core_identity" and stored["priority"] == 5
    assert stored["occurred_at"] == "2026-05-08T00:00:00.000000Z"
    assert history["entries"][0]["type"] == "memory.stored"
    assert history["entries"][0]["client_id"] == "cli"
    assert after > before


async def test_store_memory_with_the_same_event_id_stores_once(connect, user):
    event_id = str(uuid.uuid4())
    async with connect(user) as client:
        first = await call(client, "store_memory", {"text": "Idempotent fact", "event_id": event_id})
        second = await call(client, "store_memory", {"text": "Idempotent fact", "event_id": event_id})
        info = await call(client, "get_context_info")
    assert first["id"] == second["id"] == event_id
    assert info["total_memories"] == 1


async def test_retrieve_context_ranks_the_relevant_memory_first_and_filters_by_type(connect, user):
    async with connect(user) as client:
        await call(client, "store_memory", {"text": "The cat is called Miso", "memory_type": "core_identity"})
        tea = await call(client, "store_memory", {"text": "Drinks green tea every morning",
                                                  "memory_type": "core_identity"})
        await call(client, "store_memory", {"text": "Deployed the website on Friday"})
        ranked = await call(client, "retrieve_context", {"query": "what does the user drink", "limit": 3})
        only_identity = await call(client, "retrieve_context", {"memory_types": ["core_identity"], "limit": 10})
    assert ranked["memories"][0]["id"] == tea["id"]
    assert ranked["memories"][0]["score"] >= ranked["memories"][-1]["score"]
    assert {m["memory_type"] for m in only_identity["memories"]} == {"core_identity"}
    assert len(only_identity["memories"]) == 2


async def test_retrieve_context_shortens_long_texts_and_says_so(connect, user):
    async with connect(user) as client:
        await call(client, "store_memory", {"text": "Long one " + "x" * 5000})
        (found,) = (await call(client, "retrieve_context", {"query": "long"}))["memories"]
    assert found["text_truncated"] is True
    assert len(found["text"]) <= 2000


async def test_set_project_makes_it_active_and_returns_its_summary(connect, user):
    async with connect(user) as client:
        await call(client, "register_entity", {"name": "acme", "description": "Client project"})
        await call(client, "store_memory", {"text": "Use Postgres", "memory_type": "project_context",
                                            "scope": "project", "project": "acme", "tags": ["decision"]})
        await call(client, "store_memory", {"text": "Write the migration", "memory_type": "task_instruction",
                                            "scope": "project", "project": "acme"})
        summary = await call(client, "set_project", {"project": "acme"})
        defaulted = await call(client, "store_memory", {"text": "Staging is on Fly", "scope": "project"})
        info = await call(client, "get_context_info")
    assert summary["project"] == "acme" and summary["active"] is True
    assert summary["counts_by_type"] == {"project_context": 1, "task_instruction": 1}
    assert [m["text"] for m in summary["recent_decisions"]] == ["Use Postgres"]
    assert [m["text"] for m in summary["open_tasks"]] == ["Write the migration"]
    assert defaulted["project"] == "acme"
    assert info["active_project"] == "acme"
    assert "acme" in info["known_projects"]


async def test_set_project_of_an_unknown_project_is_a_readable_tool_error(connect, user):
    async with connect(user) as client:
        message = await call_error(client, "set_project", {"project": "nowhere"})
    assert "no project 'nowhere'" in message


@pytest.mark.parametrize("mode", MODES)
async def test_get_context_info_names_the_caller_and_the_protocol_version(connect, server, mode):
    token = server.token("carol", client_id="claude")
    async with connect(token, mode) as client:
        info = await call(client, "get_context_info")
    assert info["user"] == "carol" and info["issuer"] == "local" and info["client_id"] == "claude"
    assert info["scopes"] == ["memories:read", "memories:write"]
    assert info["server_version"]
    assert info["protocol_version"] == ("2026-07-28" if mode == "auto" else "2025-11-25")


async def test_link_memories_shows_the_link_on_both_and_in_related_results(connect, user):
    async with connect(user) as client:
        old = await call(client, "store_memory", {"text": "Release on May 1"})
        new = await call(client, "store_memory", {"text": "Release moved to June 1"})
        link = await call(client, "link_memories", {"source_id": new["id"], "target_id": old["id"],
                                                    "link_type": "supersedes"})
        fetched = await call(client, "fetch", {"id": old["id"]})
        related = await call(client, "retrieve_context", {"query": "release moved to June", "limit": 1,
                                                          "include_related": True})
    assert link == {"source_id": new["id"], "target_id": old["id"], "link_type": "supersedes"}
    assert fetched["metadata"]["links"] == [link]
    assert [m["id"] for m in related["memories"][0]["related"]] == [old["id"]]


async def test_list_entities_pages_with_a_cursor_until_it_is_null(connect, user):
    async with connect(user) as client:
        for name in ("zoo.a", "zoo.b", "zoo.c"):
            await call(client, "register_entity", {"name": name})
        first = await call(client, "list_entities", {"prefix": "zoo", "limit": 2})
        second = await call(client, "list_entities", {"prefix": "zoo", "limit": 2, "cursor": first["next_cursor"]})
    names = [e["name"] for e in first["entities"] + second["entities"]]
    assert names == ["zoo", "zoo.a", "zoo.b", "zoo.c"]
    assert first["next_cursor"] and second["next_cursor"] is None


async def test_search_entities_finds_a_name_despite_a_typo(connect, user):
    async with connect(user) as client:
        await call(client, "register_entity", {"name": "acme.billing", "description": "Invoices"})
        found = await call(client, "search_entities", {"query": "biling"})
    assert "acme.billing" in [e["name"] for e in found["entities"]]


async def test_delete_memory_hides_it_from_search_but_keeps_its_history(connect, user):
    async with connect(user) as client:
        stored = await call(client, "store_memory", {"text": "Lives in Lisbon"})
        deleted = await call(client, "delete_memory", {"id": stored["id"], "reason": "moved"})
        hits = await call(client, "search", {"query": "Lisbon"})
        history = await call(client, "memory_history", {"id": stored["id"]})
    assert deleted["deleted"] is True
    assert stored["id"] not in [h["id"] for h in hits["results"]]
    assert "memory.deleted" in [e["type"] for e in history["entries"]]


async def test_update_memory_changes_only_the_given_fields_and_clears_on_request(connect, user):
    async with connect(user) as client:
        stored = await call(client, "store_memory", {"text": "Task: write docs", "entity": "docs",
                                                     "status": "active", "tags": ["todo"]})
        updated = await call(client, "update_memory", {"id": stored["id"], "status": "completed"})
        cleared = await call(client, "update_memory", {"id": stored["id"], "clear": ["entity"]})
        nothing = await call_error(client, "update_memory", {"id": stored["id"]})
        both = await call_error(client, "update_memory", {"id": stored["id"], "entity": "x", "clear": ["entity"]})
    assert updated["status"] == "completed" and updated["text"] == "Task: write docs" and updated["tags"] == ["todo"]
    assert cleared["entity"] is None and cleared["status"] == "completed"
    assert "nothing to change" in nothing
    assert "not both" in both


async def test_sync_session_adds_decisions_and_replaces_the_last_status(connect, user):
    async with connect(user) as client:
        await call(client, "register_entity", {"name": "apollo"})
        first = await call(client, "sync_session", {
            "project": "apollo",
            "decisions": [{"text": "Ship on June 1", "entity": "apollo.release"}],
            "status_updates": [{"text": "QA half done", "entity": "apollo.release"}],
        })
        second = await call(client, "sync_session", {
            "project": "apollo", "status_updates": [{"text": "QA done", "entity": "apollo.release"}],
        })
        status = await call(client, "fetch", {"id": second["updated"][0]})
    assert len(first["created"]) == 2 and first["updated"] == []
    assert second["created"] == [] and len(second["updated"]) == 1
    assert status["text"] == "QA done"


async def test_forget_memory_erases_the_text_from_search_fetch_and_history(connect, user):
    secret = f"Door code {uuid.uuid4().hex}"
    async with connect(user) as client:
        stored = await call(client, "store_memory", {"text": secret})
        forgotten = await call(client, "forget_memory", {"id": stored["id"]})
        history = await call(client, "memory_history", {"id": stored["id"]})
        hits = await call(client, "search", {"query": "door code"})
    assert forgotten["memory_id"] == stored["id"] and forgotten["forgotten"] is True
    assert forgotten["redacted_seqs"]
    assert secret not in json.dumps(history)
    assert stored["id"] not in [h["id"] for h in hits["results"]]


async def test_memory_history_pages_with_a_cursor(connect, user):
    async with connect(user) as client:
        stored = await call(client, "store_memory", {"text": "Version 1"})
        for n in (2, 3, 4):
            await call(client, "update_memory", {"id": stored["id"], "text": f"Version {n}"})
        first = await call(client, "memory_history", {"id": stored["id"], "limit": 2})
        rest = await call(client, "memory_history", {"id": stored["id"], "limit": 50,
                                                     "cursor": first["next_cursor"]})
    types = [e["type"] for e in first["entries"] + rest["entries"]]
    assert types[:4] == ["memory.stored", "memory.updated", "memory.updated", "memory.updated"]
    assert rest["next_cursor"] is None
    seqs = [e["seq"] for e in first["entries"] + rest["entries"]]
    assert seqs == sorted(set(seqs))


@pytest.mark.parametrize(("tool", "arguments", "says"), [
    ("fetch", {"id": "0196f1c2-0000-7000-8000-000000000000"}, "no memory with id"),
    ("store_memory", {"text": "   "}, "text must not be empty"),
    ("store_memory", {"text": "x", "memory_type": "dream"}, "memory_type"),
    ("store_memory", {"text": "x", "entity": "not a/valid name"}, "not a valid name"),
    ("store_memory", {"text": "x", "scope": "task", "project": "p"}, "needs a task_id"),
    ("store_memory", {"text": "x", "occurred_at": "yesterday"}, "ISO 8601"),
    ("retrieve_context", {"limit": 500}, "limit"),
    ("link_memories", {"source_id": "a", "target_id": "a", "link_type": "supersedes"}, "itself"),
    ("delete_memory", {"id": "nope"}, "no memory with id"),
    ("memory_history", {"id": "nope"}, "no memory with id"),
    ("list_entities", {"cursor": None, "limit": 0}, "limit"),
    ("sync_session", {}, "nothing to sync"),
])
async def test_bad_calls_are_tool_errors_a_person_can_read(connect, user, tool, arguments, says):
    async with connect(user) as client:
        message = await call_error(client, tool, arguments)
    assert says in message
    assert "Traceback" not in message


async def test_an_unknown_tool_is_an_error_not_a_crash(connect, alice):
    async with connect(alice) as client:
        result = await client.call_tool("drop_database", {})
    assert result.is_error


async def test_reads_append_an_audit_event_to_the_callers_log(connect, user):
    async with connect(user) as client:
        stored = await call(client, "store_memory", {"text": "Audited"})
        await call(client, "fetch", {"id": stored["id"]})
        await call(client, "search", {"query": "audited"})
        history = await call(client, "memory_history", {"id": stored["id"]})
    reads = [e for e in history["entries"] if e["type"] == "memories.read"]
    assert [r["payload"]["operation"] for r in reads][:2] == ["fetch", "retrieve_context"]


RAW_MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                   "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call"}
RAW_META = '"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", ' \
           '"io.modelcontextprotocol/clientCapabilities": {}}'


@pytest.mark.parametrize(("tool", "arguments", "says"), [
    # The SDK's client cannot even send these (it encodes UTF-8): raw JSON-RPC, as any client may.
    ("store_memory", '{"text": "\\ud800"}', "text holds a lone surrogate (U+D800)"),
    ("store_memory", '{"text": "fine", "tags": ["ok", "\\udfff"]}', "tags[1] holds a lone surrogate"),
    ("store_memory", '{"text": "fine", "entity": "a\\ud800"}', "entity holds a lone surrogate"),
    ("sync_session", '{"decisions": [{"text": "\\ud800"}]}', "decisions[0].text holds a lone surrogate"),
    ("register_entity", '{"name": "acme", "description": "\\udbff"}', "description holds a lone surrogate"),
    ("search_entities", '{"query": "x\\ud800"}', "query"),
    ("retrieve_context", '{"query": "\\ud800"}', "query"),
    ("store_memory", '{"text": "fine", "tags": ' + "[" * 40 + "]" * 40 + "}", "tags"),
])
def test_lone_surrogates_and_deep_arguments_are_tool_errors_naming_the_field_and_append_nothing(
        http, server, user, tool, arguments, says):
    headers = RAW_MCP_HEADERS | {"authorization": f"Bearer {user}", "mcp-name": tool}
    warm = http.post("/mcp", headers=headers | {"mcp-name": "store_memory"}, content=(
        '{"jsonrpc": "2.0", "id": 0, "method": "tools/call", "params": {"name": "store_memory", '
        f'"arguments": {{"text": "first"}}, {RAW_META}}}}}').encode())
    assert warm.status_code == 200 and '"isError":false' in warm.text.replace(" ", ""), warm.text
    before = log_lengths(server.data_dir)
    answer = http.post("/mcp", headers=headers, content=(
        '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
        f'{{"name": "{tool}", "arguments": {arguments}, {RAW_META}}}}}').encode())
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert result["isError"] is True
    message = result["content"][0]["text"]
    assert says in message and "Traceback" not in message and "unexpected" not in message.lower()
    assert log_lengths(server.data_dir) == before


# -- the relevance floor ---------------------------------------------------------------------

_PREFERENCES = ("I take my coffee black, no sugar", "I dislike virtual reality games, they make me nauseous",
                "I always pick the aisle seat on planes", "My sister Ana lives in Madrid")
_UNRELATED = "What did Priyanka say about her thesis defence?"


@pytest.mark.parametrize("mode", MODES)
async def test_retrieve_context_finds_nothing_for_an_unrelated_query_and_says_so(connect, user, mode):
    async with connect(user, mode) as client:
        for text in _PREFERENCES:
            await call(client, "store_memory", {"text": text, "memory_type": "core_identity"})
        result = await client.call_tool("retrieve_context", {"query": _UNRELATED})
        search = await call(client, "search", {"query": _UNRELATED})
    assert not result.is_error
    assert result.structured_content["memories"] == []
    assert "No stored memory is relevant" in result.structured_content["message"]
    assert text_json(result)["message"] == result.structured_content["message"]  # the text content says it too
    assert search == {"results": []}


async def test_min_score_0_returns_k_memories_for_any_query(connect, user):
    async with connect(user) as client:
        for text in _PREFERENCES:
            await call(client, "store_memory", {"text": text, "memory_type": "core_identity"})
        found = await call(client, "retrieve_context", {"query": _UNRELATED, "limit": 3, "min_score": 0})
        hits = await call(client, "search", {"query": _UNRELATED, "min_score": 0})
        error = await call_error(client, "retrieve_context", {"query": "coffee", "min_score": -1})
    assert len(found["memories"]) == 3 and found["message"] is None
    assert len(hits["results"]) == len(_PREFERENCES)
    assert "min_score" in error


async def test_a_relevant_query_without_shared_words_still_finds_its_memory(connect, user):
    async with connect(user) as client:
        stored = [await call(client, "store_memory", {"text": text, "memory_type": "core_identity"})
                  for text in _PREFERENCES]
        found = await call(client, "retrieve_context", {"query": "Suggest some immersive games for me"})
        strict = await call(client, "retrieve_context", {"query": "Suggest some immersive games for me",
                                                         "min_score": 5})
    assert found["memories"][0]["id"] == stored[1]["id"]
    assert found["message"] is None
    assert strict["memories"] == [] and strict["message"]
