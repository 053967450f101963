"""/mcp at the HTTP level: what garbage, strangers' hosts and oversized bodies get back."""

import time

import pytest
from server_calls import bearer

MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def test_the_server_answers_healthz_at_once_and_readyz_once_the_model_is_loaded(server, http):
    # How fast it starts is measured by bench/startup.py; here only that both answer as they should.
    assert http.get("/healthz").status_code == 200
    deadline = time.monotonic() + 60
    while (status := http.get("/readyz").status_code) != 200 and time.monotonic() < deadline:
        assert status == 503
        time.sleep(0.1)
    assert status == 200


@pytest.mark.parametrize("body", [b"garbage", b'{"jsonrpc": "2.0", "id": 1, "method": ', b"[1, 2, 3]", b'"hi"'])
def test_json_rpc_garbage_gets_a_json_rpc_error_not_a_500(http, alice, body):
    response = http.post("/mcp", content=body, headers=MCP_HEADERS | bearer(alice))
    assert 400 <= response.status_code < 500
    error = response.json()
    assert error["jsonrpc"] == "2.0" and error["error"]["code"] < 0 and error["error"]["message"]


def test_a_request_naming_a_foreign_host_is_refused_as_dns_rebinding(http, alice):
    response = http.post("/mcp", json=PING, headers=MCP_HEADERS | bearer(alice) | {"host": "evil.example:8000"})
    assert response.status_code == 421


def test_a_request_from_a_foreign_origin_is_refused(http, alice):
    response = http.post("/mcp", json=PING, headers=MCP_HEADERS | bearer(alice) | {"origin": "https://evil.example"})
    assert response.status_code == 403


def test_an_oversized_mcp_body_gets_413(http, alice):
    response = http.post("/mcp", content=b"x" * (1024 * 1024 + 1), headers=MCP_HEADERS | bearer(alice))
    assert response.status_code == 413
