"""Who may call: bearer tokens on /mcp and /api/v1, the challenge without one, scopes, metadata."""

import base64
import json
import time

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_calls import MODES, bearer, call, call_error, cli_token

from memory.signing import KeyRing

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def claims(server, **overrides) -> dict:
    now = int(time.time())
    base = {"iss": server.url, "sub": "alice", "aud": server.mcp_url, "iat": now, "nbf": now, "exp": now + 600,
            "jti": "t", "scope": "memories:read memories:write", "client_id": "cli"}
    return {k: v for k, v in (base | overrides).items() if v is not None}


def signed(server, key=None, kid=None, **overrides) -> str:
    keys = KeyRing(server.data_dir)
    return jwt.encode(claims(server, **overrides), key or keys.private_key(), algorithm="EdDSA",
                      headers={"kid": kid or keys.active_key_id})


def unsigned(server) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims(server))}."


BAD_TOKENS = {
    "expired": lambda s: signed(s, iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200,
                                exp=int(time.time()) - 3600),
    "wrong audience": lambda s: signed(s, aud="https://elsewhere.example/mcp"),
    "wrong issuer": lambda s: signed(s, iss="https://elsewhere.example"),
    "unsigned (alg none)": unsigned,
    "signed by another key": lambda s: signed(s, key=Ed25519PrivateKey.generate()),
    "without exp": lambda s: signed(s, exp=None),
    "not a JWT": lambda s: "hello",
}


def assert_challenged(response: httpx2.Response, server, error: str | None) -> None:
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server.url}/.well-known/oauth-protected-resource"' in challenge
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)


@pytest.mark.parametrize("path", ["/mcp", "/api/v1/memories/search?query=x"])
def test_a_request_without_a_token_gets_401_and_the_resource_metadata_challenge(http, server, path):
    response = http.post(path, json=INITIALIZE, headers=MCP_HEADERS) if path == "/mcp" else http.get(path)
    assert_challenged(response, server, error=None)
    assert "Traceback" not in response.text


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_bad_token_is_refused_with_401_on_mcp_and_rest(http, server, kind):
    token = BAD_TOKENS[kind](server)
    mcp = http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | bearer(token))
    rest = http.get("/api/v1/entities", headers=bearer(token))
    for response in (mcp, rest):
        assert_challenged(response, server, error="invalid_token")
        assert response.json()["error"] == "invalid_token"


def test_a_token_from_memory_token_is_exactly_one_line_with_the_documented_claims(server, alice):
    printed = cli_token(server, "alice", "--scope", "memories:read", "--ttl", "2h")
    assert printed.count("\n") == 1 and printed.endswith("\n")
    token = printed.strip()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == KeyRing(server.data_dir).active_key_id
    body = jwt.decode(token, options={"verify_signature": False})
    assert set(body) == {"exp", "iat", "nbf", "jti", "iss", "aud", "sub", "scope", "client_id"}
    assert body["iss"] == server.url and body["aud"] == server.mcp_url and body["sub"] == "alice"
    assert body["scope"] == "memories:read" and body["client_id"] == "cli"
    assert body["exp"] - body["iat"] == 7200


def test_the_jwks_verifies_the_servers_tokens(http, alice):
    jwks = http.get("/.well-known/jwks.json").json()
    kid = jwt.get_unverified_header(alice)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid]
    key = jwt.PyJWK(jwk).key
    assert jwt.decode(alice, key, algorithms=["EdDSA"], options={"verify_aud": False})["sub"] == "alice"


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"])
def test_the_protected_resource_metadata_names_the_mcp_endpoint_and_this_server(http, server, path):
    response = http.get(path)
    assert response.status_code == 200
    document = response.json()
    assert document["resource"] == server.mcp_url
    assert document["authorization_servers"] == [server.url]
    assert document["scopes_supported"] == ["memories:read", "memories:write"]
    assert document["bearer_methods_supported"] == ["header"]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_a_read_only_token_can_read_but_storing_is_a_tool_error(connect, server, mode):
    token = server.token("reader", scopes=["memories:read"])
    async with connect(token, mode) as client:
        found = await call(client, "search", {"query": "anything"})
        message = await call_error(client, "store_memory", {"text": "not allowed"})
        forget = await call_error(client, "forget_memory", {"id": "x"})
        malformed = await call_error(client, "store_memory", {"text": "   "})
    assert found == {"results": []}
    assert "memories:write" in message and "memories:write" in forget and "memories:write" in malformed


def test_a_read_only_token_gets_403_insufficient_scope_from_rest_writes(http, server):
    token = server.token("reader", scopes=["memories:read"])
    stored = http.post("/api/v1/memories", json={"text": "not allowed"}, headers=bearer(token))
    read = http.get("/api/v1/entities", headers=bearer(token))
    assert stored.status_code == 403
    assert 'error="insufficient_scope"' in stored.headers["www-authenticate"]
    assert 'scope="memories:write"' in stored.headers["www-authenticate"]
    assert "memories:write" in stored.json()["detail"]
    assert read.status_code == 200


def test_a_write_only_token_cannot_read_over_rest(http, server):
    token = server.token("writer", scopes=["memories:write"])
    response = http.get("/api/v1/entities", headers=bearer(token))
    assert response.status_code == 403
    assert 'scope="memories:read"' in response.headers["www-authenticate"]


def test_a_session_opened_by_one_user_cannot_be_used_with_another_users_token(http, server, alice, bob):
    opened = http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS | bearer(alice))
    session = opened.headers["mcp-session-id"]
    hijack = http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                       headers=MCP_HEADERS | bearer(bob) | {"mcp-session-id": session,
                                                           "mcp-protocol-version": "2025-06-18"})
    assert hijack.status_code == 404
    http.delete("/mcp", headers=bearer(alice) | {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"})
