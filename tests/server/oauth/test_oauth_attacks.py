"""The attack matrix: every forged, misdirected, replayed or downgraded request is refused, with
the status and OAuth error a client can act on. Against a live `memory serve`."""

import base64
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlsplit

import httpx2
import jwt
import pytest
from conftest import PASSWORDS
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from oauth_calls import CALLBACK, authorize_url, exchange, pkce, refresh
from oauth_person import Person, form_fields, redirect_params
from server_calls import bearer

from memory.signing import KeyRing




def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture()
def http(as_server) -> httpx2.Client:
    with httpx2.Client(base_url=as_server.url, timeout=30, follow_redirects=False) as client:
        yield client


@pytest.fixture()
def client_id(http) -> str:
    registered = http.post("/register", json={"client_name": "Attack test", "redirect_uris": [CALLBACK],
                                              "token_endpoint_auth_method": "none"})
    assert registered.status_code == 201, registered.text
    return registered.json()["client_id"]


#: A native app's redirect: errors at /authorize go back to it (nobody else listens on the loopback).
LOOPBACK_CALLBACK = "http://127.0.0.1:5000/callback"


@pytest.fixture()
def loopback_client_id(http) -> str:
    registered = http.post("/register", json={"client_name": "Native test", "redirect_uris": [LOOPBACK_CALLBACK],
                                              "token_endpoint_auth_method": "none"})
    assert registered.status_code == 201, registered.text
    return registered.json()["client_id"]


async def code_for(server, client_id: str, challenge: str, user: str = "alice", **overrides: str) -> dict[str, str]:
    location = await Person(user, PASSWORDS[user]).location_after_consent(
        authorize_url(server, client_id, challenge, **overrides))
    return redirect_params(location)


def oauth_error(response: httpx2.Response) -> str:
    return response.json()["error"]


# The resource server: forged and misdirected access tokens.


def _claims(server, **overrides) -> dict:
    now = int(time.time())
    claims = {"iss": server.url, "sub": "alice", "aud": server.mcp_url, "iat": now, "nbf": now, "exp": now + 300,
              "jti": secrets.token_hex(8), "scope": "memories:read memories:write", "client_id": "forger"}
    return {k: v for k, v in {**claims, **overrides}.items() if v is not None}


def _signed(server, headers: dict | None = None, **overrides) -> str:
    keys = KeyRing(server.data_dir)
    return jwt.encode(_claims(server, **overrides), keys.private_key(), algorithm="EdDSA",
                      headers={"kid": keys.active_key_id, **(headers or {})})


def _unsigned(server) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": KeyRing(server.data_dir).active_key_id}).encode())
    return f"{header}.{_b64(json.dumps(_claims(server)).encode())}."


def _hs256_with_public_key(server) -> str:
    keys = KeyRing(server.data_dir)
    public = keys.public_keys()[keys.active_key_id].public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = (f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': keys.active_key_id}).encode())}."
                     f"{_b64(json.dumps(_claims(server)).encode())}")
    return f"{signing_input}.{_b64(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())}"


def _unknown_kid(server) -> str:
    return jwt.encode(_claims(server), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "not-ours"})


def _self_keyed(server, header: str) -> str:
    attacker = Ed25519PrivateKey.generate()
    x = _b64(attacker.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    value = {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}, "jku": "https://evil.example/jwks.json"}[header]
    # Signed with the server's own key, so only the header itself can be the reason for refusal.
    return _signed(server, headers={header: value})


FORGERIES = {
    "wrong audience": lambda s: _signed(s, aud="https://other.example/mcp"),
    "missing audience": lambda s: _signed(s, aud=None),
    "several audiences": lambda s: _signed(s, aud=[s.mcp_url, "https://other.example/mcp"]),
    "expired": lambda s: _signed(s, exp=int(time.time()) - 120, iat=int(time.time()) - 400),
    "not valid yet": lambda s: _signed(s, nbf=int(time.time()) + 600),
    "wrong issuer": lambda s: _signed(s, iss="https://evil.example"),
    "alg none": _unsigned,
    "HS256 keyed with the public key": _hs256_with_public_key,
    "unknown kid": _unknown_kid,
    "jwk header": lambda s: _self_keyed(s, "jwk"),
    "jku header": lambda s: _self_keyed(s, "jku"),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_or_misdirected_access_token_is_refused_with_invalid_token(as_server, http, forgery):
    response = http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                         headers=bearer(FORGERIES[forgery](as_server)))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge and "resource_metadata=" in challenge
    assert response.json()["error"] == "invalid_token"


def test_a_genuine_token_passes_the_same_check(as_server, http):
    response = http.get("/api/v1/entities", headers=bearer(as_server.token("alice")))
    assert response.status_code == 200


def test_an_access_token_in_the_query_string_is_refused_even_when_genuine(as_server, http):
    response = http.get(f"/api/v1/entities?access_token={as_server.token('alice')}")
    assert response.status_code == 401
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_a_request_without_a_token_is_challenged_with_metadata_and_scopes(as_server, http):
    response = http.post("/mcp", json={})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and "error=" not in challenge
    assert f'resource_metadata="{as_server.url}/.well-known/oauth-protected-resource"' in challenge
    assert 'scope="memories:read memories:write"' in challenge


# The authorization server: replays, downgrades and misdirection.


@pytest.mark.anyio
async def test_a_reused_code_is_refused_and_revokes_the_tokens_it_issued(as_server, http, client_id):
    verifier, challenge = pkce()
    code = (await code_for(as_server, client_id, challenge))["code"]
    first = exchange(http, client_id, code, verifier)
    assert first.status_code == 200, first.text
    second = exchange(http, client_id, code, verifier)
    assert second.status_code == 400 and oauth_error(second) == "invalid_grant"
    revoked = refresh(http, client_id, first.json()["refresh_token"])
    assert revoked.status_code == 400 and oauth_error(revoked) == "invalid_grant"
    access = http.get("/api/v1/entities", headers=bearer(first.json()["access_token"]))
    assert access.status_code == 401 and "revoked" in access.headers["www-authenticate"]


@pytest.mark.anyio
async def test_a_rotated_refresh_token_presented_again_revokes_the_whole_family(as_server, http, client_id):
    verifier, challenge = pkce()
    tokens = exchange(http, client_id, (await code_for(as_server, client_id, challenge))["code"], verifier).json()
    rotated = refresh(http, client_id, tokens["refresh_token"])
    assert rotated.status_code == 200 and rotated.json()["refresh_token"] != tokens["refresh_token"]
    replayed = refresh(http, client_id, tokens["refresh_token"])
    assert replayed.status_code == 400 and oauth_error(replayed) == "invalid_grant"
    successor = refresh(http, client_id, rotated.json()["refresh_token"])
    assert successor.status_code == 400 and oauth_error(successor) == "invalid_grant"
    assert http.get("/api/v1/entities", headers=bearer(rotated.json()["access_token"])).status_code == 401


@pytest.mark.parametrize("method", ["plain", None])
def test_authorize_refuses_plain_or_missing_pkce(as_server, http, loopback_client_id, method):
    verifier, _ = pkce()
    challenge = verifier if method == "plain" else None
    response = http.get(authorize_url(as_server, loopback_client_id, challenge, code_challenge_method=method,
                                      redirect_uri=LOOPBACK_CALLBACK))
    assert response.status_code == 302
    answer = redirect_params(response.headers["location"])
    assert answer["error"] == "invalid_request" and answer["state"] == "st4te" and answer["iss"] == as_server.url
    assert "code" not in answer


@pytest.mark.anyio
async def test_a_wrong_code_verifier_is_refused(as_server, http, client_id):
    _, challenge = pkce()
    code = (await code_for(as_server, client_id, challenge))["code"]
    other_verifier, _ = pkce()
    response = exchange(http, client_id, code, other_verifier)
    assert response.status_code == 400 and oauth_error(response) == "invalid_grant"


def test_authorize_never_redirects_to_an_unregistered_redirect_uri(as_server, http, client_id):
    _, challenge = pkce()
    response = http.get(authorize_url(as_server, client_id, challenge, redirect_uri="https://evil.example/cb"))
    assert response.status_code == 400 and "location" not in response.headers
    assert "not registered" in response.text


@pytest.mark.anyio
async def test_a_code_is_bound_to_its_redirect_uri_and_client(as_server, http, client_id):
    verifier, challenge = pkce()
    code = (await code_for(as_server, client_id, challenge))["code"]
    other_client = http.post("/register", json={"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none"})
    stolen = exchange(http, other_client.json()["client_id"], code, verifier)
    assert stolen.status_code == 400 and oauth_error(stolen) == "invalid_grant"
    verifier, challenge = pkce()
    code = (await code_for(as_server, client_id, challenge))["code"]
    moved = exchange(http, client_id, code, verifier, redirect_uri="https://chatgpt.com/elsewhere")
    assert moved.status_code == 400 and oauth_error(moved) == "invalid_grant"


@pytest.mark.parametrize("uri", ["http://evil.example/callback", "http://chatgpt.com/connector_platform_oauth_redirect",
                                 "javascript:alert(1)", "https://chatgpt.com/cb#fragment"])
def test_registration_refuses_a_redirect_uri_that_is_not_https_or_loopback(http, uri):
    response = http.post("/register", json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"})
    assert response.status_code == 400 and oauth_error(response) == "invalid_redirect_uri"


@pytest.mark.parametrize("uri", ["http://evil.example\\@127.0.0.1/callback", "http://user@127.0.0.1/callback",
                                 "https://127.1/callback", "https://0x7f.0.0.1/callback", "https://2130706433/cb",
                                 "http://LOCALHOST/callback", "HTTPS://chatgpt.com/cb", "https://chatgpt.com./cb",
                                 "http://127.0.0.1\t/callback", "https://chat\u0261pt.com/cb", "https://chatgpt%2ecom/cb",
                                 "https://[0:0:0:0:0:0:0:1]/callback", "https:///cb", "https://chatgpt.com/a/../cb",
                                 "https://chatgpt.com/c b", "http://127.0.0.1:08080/callback"])
def test_registration_refuses_a_redirect_uri_a_browser_could_read_differently(http, uri):
    response = http.post("/register", json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"})
    assert response.status_code == 400 and oauth_error(response) == "invalid_redirect_uri"


def test_a_loopback_redirect_may_use_another_port_but_nothing_else_may_differ(as_server, http):
    registered = http.post("/register", json={"redirect_uris": ["http://127.0.0.1:5000/callback"],
                                              "token_endpoint_auth_method": "none"}).json()["client_id"]
    _, challenge = pkce()
    other_port = http.get(authorize_url(as_server, registered, challenge, redirect_uri="http://127.0.0.1:6111/callback"))
    other_path = http.get(authorize_url(as_server, registered, challenge, redirect_uri="http://127.0.0.1:5000/other"))
    assert other_port.status_code == 200 and "username" in other_port.text
    assert other_path.status_code == 400


def test_a_token_for_another_resource_is_not_issued(as_server, http, loopback_client_id):
    _, challenge = pkce()
    response = http.get(authorize_url(as_server, loopback_client_id, challenge, resource="https://other.example/mcp",
                                      redirect_uri=LOOPBACK_CALLBACK))
    assert redirect_params(response.headers["location"])["error"] == "invalid_target"


@pytest.mark.anyio
async def test_the_redirect_carries_code_state_and_issuer(as_server, client_id):
    _, challenge = pkce()
    answer = await code_for(as_server, client_id, challenge)
    assert answer["code"] and answer["state"] == "st4te" and answer["iss"] == as_server.url


@pytest.mark.anyio
async def test_a_wrong_password_gets_the_login_page_again_and_no_code(as_server, client_id):
    _, challenge = pkce()
    async with httpx2.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorize_url(as_server, client_id, challenge))
        fields = form_fields(page.text) | {"username": "alice", "password": "not her password"}
        answer = await browser.post(f"{as_server.url}/authorize/login", data=fields)
    assert answer.status_code == 401 and 'name="password"' in answer.text and "approve" not in answer.text


@pytest.mark.anyio
async def test_a_login_form_posted_from_another_browser_is_refused(as_server, client_id):
    _, challenge = pkce()
    async with httpx2.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorize_url(as_server, client_id, challenge))
    fields = form_fields(page.text) | {"username": "alice", "password": PASSWORDS["alice"]}
    async with httpx2.AsyncClient(timeout=30) as attacker:  # no cookie of the victim's browser
        answer = await attacker.post(f"{as_server.url}/authorize/login", data=fields)
    assert answer.status_code == 403


@pytest.mark.anyio
async def test_a_read_only_grant_gets_403_insufficient_scope_on_a_write(as_server, http, client_id):
    verifier, challenge = pkce()
    code = (await code_for(as_server, client_id, challenge, scope="memories:read"))["code"]
    tokens = exchange(http, client_id, code, verifier).json()
    assert tokens["scope"] == "memories:read"
    write = http.post("/api/v1/memories", json={"text": "nope"}, headers=bearer(tokens["access_token"]))
    assert write.status_code == 403
    assert 'error="insufficient_scope"' in write.headers["www-authenticate"]
    assert http.get("/api/v1/entities", headers=bearer(tokens["access_token"])).status_code == 200


@pytest.mark.anyio
async def test_a_revoked_refresh_token_takes_its_access_tokens_with_it(as_server, http, client_id):
    verifier, challenge = pkce()
    tokens = exchange(http, client_id, (await code_for(as_server, client_id, challenge))["code"], verifier).json()
    assert http.get("/api/v1/entities", headers=bearer(tokens["access_token"])).status_code == 200
    revoked = http.post("/revoke", data={"token": tokens["refresh_token"], "client_id": client_id})
    assert revoked.status_code == 200
    assert oauth_error(refresh(http, client_id, tokens["refresh_token"])) == "invalid_grant"
    assert http.get("/api/v1/entities", headers=bearer(tokens["access_token"])).status_code == 401


@pytest.mark.parametrize("path", ["/mcp", "/.well-known/oauth-protected-resource",
                                  "/.well-known/oauth-authorization-server", "/register", "/token"])
def test_chatgpt_origins_pass_cors_preflight_and_others_do_not(http, path):
    def preflight(origin: str) -> httpx2.Response:
        return http.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "authorization, content-type"})

    for origin in ("https://chatgpt.com", "https://chat.openai.com"):
        allowed = preflight(origin)
        assert allowed.status_code in (200, 204)
        assert allowed.headers["access-control-allow-origin"] == origin
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in preflight("https://evil.example").headers
    answer = http.get("/.well-known/oauth-protected-resource", headers={"Origin": "https://chatgpt.com"})
    assert answer.headers["access-control-allow-origin"] == "https://chatgpt.com"


def test_metadata_advertises_only_what_is_true(as_server, http):
    metadata = http.get("/.well-known/oauth-authorization-server").json()
    assert http.get("/.well-known/openid-configuration").json() == metadata
    assert metadata["issuer"] == as_server.url
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["client_id_metadata_document_supported"] is True
    assert metadata["scopes_supported"] == ["memories:read", "memories:write"]
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        resource = http.get(path).json()
        assert resource["resource"] == as_server.mcp_url and resource["authorization_servers"] == [as_server.url]
    assert urlsplit(metadata["jwks_uri"]).path == "/.well-known/jwks.json"
    assert http.get("/.well-known/jwks.json").json()["keys"]


@pytest.mark.anyio
async def test_a_client_registered_with_a_secret_must_present_it_at_the_token_endpoint(as_server, http):
    registered = http.post("/register", json={"redirect_uris": [CALLBACK],
                                              "grant_types": ["authorization_code", "refresh_token", "implicit"]})
    assert registered.status_code == 201
    client = registered.json()
    assert client["token_endpoint_auth_method"] == "client_secret_basic" and client["client_secret"]
    assert client["grant_types"] == ["authorization_code", "refresh_token"]
    verifier, challenge = pkce()
    code = (await code_for(as_server, client["client_id"], challenge))["code"]
    anonymous = exchange(http, client["client_id"], code, verifier)
    assert anonymous.status_code == 401 and oauth_error(anonymous) == "invalid_client"
    verifier, challenge = pkce()
    code = (await code_for(as_server, client["client_id"], challenge))["code"]
    authenticated = http.post("/token", auth=(client["client_id"], client["client_secret"]),
                              data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                                    "code_verifier": verifier})
    assert authenticated.status_code == 200, authenticated.text
