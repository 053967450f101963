"""Who may call: bearer tokens on /mcp and /api/v1, the challenge without one, scopes, metadata."""

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_calls import MODES, bearer, call, call_error, cli_token
from web_calls import add_user

from memory.identity import LOCAL_ISSUER, Identity
from memory.log import log_path
from memory.server.oauth.store import OAuthStore
from memory.server.process import ServerProcess
from memory.signing import KEYRING_FILE, KeyRing, keys_dir

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
    # What `memory token` printed before tokens were registered: signed by our key, unexpired, unknown.
    "never registered (made by an older memory token)": lambda s: signed(s),
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


# -- personal tokens: named, listed, revoked, capped ------------------------------------------

MEMORY = Path(sys.executable).parent / "memory"


def memory(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(MEMORY), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def someone() -> str:
    return f"user{uuid.uuid4().hex[:8]}"


def registered(server, user: str, name: str = "cli", **overrides) -> str:
    """A token signed by hand and registered as `memory token` registers one: only the claims differ."""
    kid = overrides.pop("kid", None)
    token_claims = claims(server, sub=user, jti=uuid.uuid4().hex, **overrides)
    store = OAuthStore(server.data_dir)
    store.register_personal_token(token_claims["jti"], user=user, name=name, scopes=[],
                                  created_at=token_claims["iat"], expires_at=token_claims["exp"])
    store.close()
    keys = KeyRing(server.data_dir)
    return jwt.encode(token_claims, keys.private_key(kid), algorithm="EdDSA", headers={"kid": kid or keys.active_key_id})


def listing(server, user: str) -> dict[str, str]:
    """`memory token list`: name -> the rest of its line."""
    result = memory("token", "list", "--data-dir", str(server.data_dir), "--user", user)
    assert result.returncode == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()[1:]}


def test_memory_token_refuses_a_ten_year_token_with_a_message_naming_the_cap(server):
    result = memory("token", "--data-dir", str(server.data_dir), "--user", "alice", "--ttl", "3650d")
    lowered = memory("token", "--data-dir", str(server.data_dir), "--user", "alice", "--ttl", "2h",
                     env={"MEMORY_PERSONAL_TOKEN_MAX_TTL_SECONDS": "3600"})

    assert result.returncode == 1 and result.stdout == ""
    assert "a personal token may live at most 90d (personal_token_max_ttl_seconds); asked for 3650d" in result.stderr
    assert lowered.returncode == 1 and "at most 1h" in lowered.stderr


def test_a_token_made_to_live_longer_than_the_cap_is_refused_by_the_server(http, server):
    now = int(time.time())
    decade = registered(server, someone(), iat=now, nbf=now, exp=now + 3650 * 86400)

    response = http.get("/api/v1/entities", headers=bearer(decade))

    assert_challenged(response, server, error="invalid_token")
    assert "lives longer than this server allows personal tokens (90d)" in response.json()["error_description"]


def test_a_named_token_is_listed_with_its_last_use_and_every_event_it_causes_names_it(http, server):
    user = someone()
    token = cli_token(server, user, "--name", "claude-code", "--ttl", "30d").strip()
    assert listing(server, user)["claude-code"].endswith("never")

    stored = http.post("/api/v1/memories", json={"text": "Erin prefers tabs"}, headers=bearer(token))
    read = http.get(f"/api/v1/memories/{stored.json()['id']}", headers=bearer(token))

    assert stored.status_code == 201 and read.status_code == 200
    line = listing(server, user)["claude-code"]
    assert not line.endswith("never") and line.split()[-2] == time.strftime("%Y-%m-%d", time.gmtime())
    with sqlite3.connect(f"file:{log_path(server.data_dir, Identity(LOCAL_ISSUER, user))}?mode=ro", uri=True) as db:
        actors = db.execute("SELECT type, actor_client_id FROM events ORDER BY seq").fetchall()
    assert ("memories.read", "claude-code") in actors
    assert {client for _, client in actors} == {"claude-code"}


def test_memory_token_without_a_name_is_named_cli(server):
    user = someone()
    cli_token(server, user)
    assert list(listing(server, user)) == ["cli"]


def test_revoking_a_name_refuses_its_tokens_at_once_and_leaves_the_others_working(http, server):
    user = someone()
    first = cli_token(server, user, "--name", "codex").strip()
    second = cli_token(server, user, "--name", "codex").strip()
    script = cli_token(server, user, "--name", "backup-script").strip()
    assert http.get("/api/v1/entities", headers=bearer(first)).status_code == 200

    revoked = memory("token", "revoke", "--data-dir", str(server.data_dir), "--user", user, "codex")
    again = memory("token", "revoke", "--data-dir", str(server.data_dir), "--user", user, "codex")

    assert revoked.returncode == 0 and "revoked 2 token(s) named codex" in revoked.stdout
    assert again.returncode == 1 and "no live token named 'codex'" in again.stderr
    for token in (first, second):
        response = http.get("/api/v1/entities", headers=bearer(token))
        assert_challenged(response, server, error="invalid_token")
    assert http.get("/api/v1/entities", headers=bearer(script)).status_code == 200
    assert list(listing(server, user)) == ["backup-script"]


def test_memory_user_remove_revokes_the_persons_tokens(http, server):
    user = someone()
    add_user(server.data_dir, user, "a-long-password")
    token = cli_token(server, user, "--name", "claude-code").strip()
    assert http.get("/api/v1/entities", headers=bearer(token)).status_code == 200

    removed = memory("user", "remove", user, "--data-dir", str(server.data_dir))

    assert removed.returncode == 0, removed.stderr
    assert_challenged(http.get("/api/v1/entities", headers=bearer(token)), server, error="invalid_token")
    assert listing(server, user) == {}


def test_a_server_started_with_a_lower_cap_refuses_a_token_memory_token_made_under_the_default(tmp_path):
    with ServerProcess(tmp_path / "data", extra_args=["--personal-token-max-ttl", "1h"]) as server:
        hour = cli_token(server, "grace", "--ttl", "1h").strip()
        two_hours = cli_token(server, "grace", "--ttl", "2h").strip()  # the CLI's own cap is the default 90d
        within = httpx2.get(f"{server.url}/api/v1/entities", headers=bearer(hour), timeout=30)
        beyond = httpx2.get(f"{server.url}/api/v1/entities", headers=bearer(two_hours), timeout=30)

    assert within.status_code == 200
    assert beyond.status_code == 401 and "personal tokens (1h)" in beyond.json()["error_description"]


# -- key rotation on a running server ---------------------------------------------------------


def _refused_within(http, token: str, seconds: float) -> httpx2.Response:
    deadline = time.monotonic() + seconds
    while True:
        response = http.get("/api/v1/entities", headers=bearer(token))
        if response.status_code == 401 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_rotations_reach_a_running_server_without_a_restart_and_memory_verify_names_the_keys(tmp_path):
    """Plain rotation: the old key's tokens issued before it still work, a token it signed after is
    refused, the server signs with the new key. --compromised: every token of that key is refused
    within a couple of seconds. Through it all the log verifies, naming each key and its events."""
    data_dir = tmp_path / "data"
    keys = lambda: json.loads((keys_dir(data_dir) / KEYRING_FILE).read_text())  # noqa: E731
    with ServerProcess(data_dir) as server, httpx2.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready()
        first_key = keys()["active"]
        early = cli_token(server, "frank", "--name", "script").strip()
        assert http.post("/api/v1/memories", json={"text": "one"}, headers=bearer(early)).status_code == 201

        assert memory("rotate-key", "--data-dir", str(data_dir)).returncode == 0
        second_key = keys()["active"]
        late = registered(server, "frank", kid=first_key, iat=int(time.time()) + 2, nbf=int(time.time()))
        refused = _refused_within(http, late, 3)
        assert refused.status_code == 401, refused.text
        assert "issued after the key that signed it was retired" in refused.json()["error_description"]
        assert http.get("/api/v1/entities", headers=bearer(early)).status_code == 200
        middle = cli_token(server, "frank", "--name", "script").strip()
        assert http.post("/api/v1/memories", json={"text": "two"}, headers=bearer(middle)).status_code == 201

        compromised = memory("rotate-key", "--compromised", "--data-dir", str(data_dir))
        assert compromised.returncode == 0 and f"{second_key} marked compromised" in compromised.stdout
        refused = _refused_within(http, middle, 2.5)
        assert refused.status_code == 401, "the running server still accepts a token of a compromised key"
        assert "compromised" in refused.json()["error_description"]
        assert http.get("/api/v1/entities", headers=bearer(early)).status_code == 200
        third_key = keys()["active"]
        fresh = cli_token(server, "frank", "--name", "script").strip()
        assert http.post("/api/v1/memories", json={"text": "three"}, headers=bearer(fresh)).status_code == 201


    verified = memory("verify", "--data-dir", str(data_dir), "--user", "frank")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    signers = re.search(r"signed by (.*)$", verified.stdout, re.M).group(1)
    assert re.fullmatch(rf"{first_key} \(\d+\), {second_key} \(\d+, compromised\), {third_key} \(\d+\)", signers), signers
