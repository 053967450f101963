"""Fuzzing the HTTP surface: whatever arrives, no 5xx, and nothing invalid reaches a log.

Schemathesis generates calls from the server's own OpenAPI document (/api/v1), Hypothesis
generates bodies for the OAuth endpoints (not in that document) and JSON-RPC for /mcp:
oversized, deeply nested, wrong types, invalid UTF-8, duplicate keys, non-objects, batches.
A call answered with an error must leave every log head where it was, and at the end every log
still verifies. Example counts are bounded so this stays a few seconds per target.
"""

import json

import pytest
import schemathesis
from hardening_util import log_heads, memory_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
TOOLS = {"search", "fetch", "store_memory", "retrieve_context", "update_memory", "delete_memory", "forget_memory",
         "link_memories", "memory_history", "set_project", "get_context_info", "sync_session",
         "register_entity", "list_entities", "search_entities"}


def test_the_rest_api_never_answers_5xx_and_refused_calls_append_nothing(hardening_server):
    # Schemathesis' own pytest loader does not run on pytest 9 (it reads a removed private
    # attribute), so its case strategies are driven by Hypothesis here, one operation at a time.
    schema = schemathesis.openapi.from_url(f"{hardening_server.url}/schema/openapi.json")
    headers = {"Authorization": f"Bearer {hardening_server.token('fuzzer')}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, "the document should list every REST operation"
    for operation in operations:
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def call(case):
            before = log_heads(hardening_server.data_dir)
            response = case.call(base_url=hardening_server.url, headers=headers)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                assert log_heads(hardening_server.data_dir) == before, f"{response.status_code} yet the log grew"

        call()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
form_fields = st.dictionaries(
    st.sampled_from(["grant_type", "code", "client_id", "redirect_uri", "code_verifier", "refresh_token", "token",
                     "token_type_hint", "resource", "scope", "client_secret", "username", "password"]),
    st.text(max_size=40) | st.sampled_from(["authorization_code", "refresh_token", "S256", "https://x.example"]),
    max_size=8,
)


@FUZZ
@given(path=st.sampled_from(["/token", "/revoke", "/authorize/login", "/authorize/consent"]), fields=form_fields)
def test_oauth_form_endpoints_never_answer_5xx(http, path, fields):
    answer = http.post(path, data=fields)
    assert answer.status_code < 500, answer.text


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["redirect_uris", "client_name", "token_endpoint_auth_method",
                                            "grant_types", "response_types", "scope", "client_uri", "logo_uri"]),
                            json_values, max_size=6) | json_values)
def test_client_registration_never_answers_5xx(http, body):
    answer = http.post("/register", json=body)
    assert answer.status_code < 500, answer.text


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["response_type", "client_id", "redirect_uri", "state", "scope",
                                             "code_challenge", "code_challenge_method", "resource"]),
                             st.text(max_size=60), max_size=8))
def test_the_authorize_page_never_answers_5xx(http, query):
    answer = http.get("/authorize", params=query)
    assert answer.status_code < 500, answer.text


def rpc(method, params):
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


not_a_tool = st.text(max_size=20).filter(lambda name: name not in TOOLS)
requests = st.one_of(
    st.builds(rpc, st.sampled_from(["tools/call", "tools/list", "initialize", "ping", "resources/read", "", "x"]),
              json_values),
    st.builds(rpc, st.just("tools/call"), st.fixed_dictionaries({"name": not_a_tool, "arguments": json_values})),
    st.fixed_dictionaries({}, optional={"jsonrpc": json_values, "id": json_values, "method": json_values,
                                        "params": json_values}),
)
bodies = st.one_of(
    requests.map(lambda r: json.dumps(r).encode()),
    st.lists(requests, max_size=4).map(lambda batch: json.dumps(batch).encode()),  # batches
    json_values.map(lambda v: json.dumps(v).encode()),  # non-objects and objects of anything
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),  # deeply nested
    st.integers(1, 2000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.binary(max_size=200),  # invalid UTF-8, half a document
    st.sampled_from([b'{"jsonrpc":"2.0","jsonrpc":"1.0","id":1,"method":"ping"}',
                     b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping","params":{}}',
                     b"\xff\xfe{\x00}", b'{"jsonrpc":"2.0","id":1,"method":"ping"}\x00',
                     b"x" * (1024 * 1024 + 10)]),  # oversized
)


@FUZZ
@given(body=bodies, protocol=st.sampled_from([None, "2025-11-25", "2026-07-28", "1999-01-01"]))
def test_json_rpc_garbage_on_mcp_never_answers_5xx_nor_reaches_a_log(hardening_server, http, body, protocol):
    headers = MCP_HEADERS | {"Authorization": f"Bearer {hardening_server.token('fuzzer')}"}
    if protocol:
        headers["mcp-protocol-version"] = protocol
    before = log_heads(hardening_server.data_dir)
    answer = http.post("/mcp", content=body, headers=headers)
    assert answer.status_code < 500, answer.text
    assert log_heads(hardening_server.data_dir) == before


def test_every_log_still_verifies_after_the_fuzzing(hardening_server):
    verified = memory_cli("verify", data_dir=hardening_server.data_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
