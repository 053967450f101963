"""What a browser (or a page trying to use one) gets from the server: DNS-rebinding and foreign
origins refused on /mcp, hardening headers on every answer, no-store on pages and tokens, and no
internals in an error."""

import re

import anyio
import pytest
from litestar.testing import TestClient

from memory.server.app import create_app
from memory.server.auth import issue_personal_token
from memory.server.oauth.store import OAuthStore
from memory.server.security_headers import HTML_POLICY, add_security_headers
from memory.server.settings import ServerSettings
from memory.service import MemoryService

MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"


def bearer(server, name="alice"):
    return {"Authorization": f"Bearer {server.token(name)}"}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost:1", "127.0.0.1:{other}"])
def test_a_foreign_host_on_mcp_is_refused_with_421(hardening_server, http, host):
    host = host.format(port=hardening_server.port, other=hardening_server.port + 1)
    answer = http.post("/mcp", json=PING, headers=MCP_HEADERS | bearer(hardening_server) | {"host": host})
    assert answer.status_code == 421, answer.text


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1",
                                    "https://chatgpt.com.evil.example"])
def test_a_foreign_origin_on_mcp_is_refused_with_403(hardening_server, http, origin):
    answer = http.post("/mcp", json=PING, headers=MCP_HEADERS | bearer(hardening_server) | {"origin": origin})
    assert answer.status_code == 403, answer.text


def test_a_trusted_host_and_origin_are_served(hardening_server, http):
    answer = http.post("/mcp", json=PING, headers=MCP_HEADERS | bearer(hardening_server) | {
        "host": f"localhost:{hardening_server.port}", "origin": "https://chatgpt.com"})
    assert answer.status_code != 421 and answer.status_code != 403 and answer.status_code < 500


@pytest.mark.parametrize(("method", "path"), [("GET", "/healthz"), ("GET", "/nowhere"), ("GET", "/api/v1/entities"),
                                              ("POST", "/mcp"), ("GET", "/schema/openapi.json"),
                                              ("POST", "/token")])
def test_every_answer_carries_nosniff_deny_framing_and_no_referrer(hardening_server, http, method, path):
    answer = http.request(method, path, headers=bearer(hardening_server), json={} if method == "POST" else None)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_token_answers_are_never_cached(http):
    answer = http.post("/token", data={"grant_type": "authorization_code", "code": "nope", "client_id": "nope"})
    assert 400 <= answer.status_code < 500
    assert answer.headers["cache-control"] == "no-store"


def test_the_sign_in_page_cannot_be_framed_cached_or_sniffed_and_keeps_its_own_policy(hardening_server, http):
    client = http.post("/register", json={"redirect_uris": [CALLBACK], "client_name": "Header Test",
                                          "token_endpoint_auth_method": "none"})
    assert client.status_code == 201, client.text
    page = http.get("/authorize", params={
        "response_type": "code", "client_id": client.json()["client_id"], "redirect_uri": CALLBACK,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
        "resource": hardening_server.mcp_url, "state": "s"})
    assert page.status_code == 200 and "<form" in page.text
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and re.search(r"default-src '(none|self)'", policy)
    # The consent form's answer is a redirect to the client's host: a form-action would block it.
    assert "form-action" not in policy
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"


def test_an_html_answer_without_a_policy_of_its_own_gets_the_default_one():
    message = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]}
    anyio.run(add_security_headers, message, {"type": "http"})
    headers = dict(message["headers"])
    assert headers[b"content-security-policy"] == HTML_POLICY.encode()
    assert headers[b"cache-control"] == b"no-store"
    kept = {"type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/html"), (b"content-security-policy", b"default-src 'none'")]}
    anyio.run(add_security_headers, kept, {"type": "http"})
    assert [v for k, v in kept["headers"] if k == b"content-security-policy"] == [b"default-src 'none'"]


def test_an_unexpected_error_in_a_tool_reveals_no_internals(data_dir, embedder, monkeypatch):
    service = MemoryService(data_dir, embedder)

    def broken(*_args, **_kwargs):
        raise RuntimeError("secret internal detail at /srv/memory/service.py line 42")

    monkeypatch.setattr(service, "context_info", broken)
    settings = ServerSettings(data_dir=str(data_dir), port=8000)
    store = OAuthStore(data_dir)
    token = issue_personal_token(service.keys, store, issuer=settings.base_url, audience=settings.resource_url,
                                 user="alice", name="cli", scopes=["memories:read"], ttl_seconds=60,
                                 max_ttl_seconds=settings.personal_token_max_ttl_seconds)
    store.close()
    headers = MCP_HEADERS | {"Authorization": f"Bearer {token}", "host": "127.0.0.1:8000",
                             "mcp-protocol-version": "2025-11-25"}
    with TestClient(create_app(settings, service=service), base_url="http://127.0.0.1:8000") as client:
        opened = client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert opened.status_code == 200, opened.text
        session = {"mcp-session-id": opened.headers["mcp-session-id"]}
        client.post("/mcp", headers=headers | session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        answer = client.post("/mcp", headers=headers | session, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_context_info", "arguments": {}}})
    assert answer.status_code == 200
    assert '"isError":true' in answer.text.replace(" ", "")
    for leak in ("secret internal detail", "/srv/memory", "Traceback", "RuntimeError", "line 42"):
        assert leak not in answer.text, answer.text
