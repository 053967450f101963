"""The whole connection, as ChatGPT makes it, driven by the MCP SDK's own OAuth client against a
live `memory serve`: 401 → resource metadata → authorization server metadata → registration (or a
client metadata document) → /authorize with PKCE → login form → consent → code → token → tool
calls → refresh once the access token has expired."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from conftest import ACCESS_TOKEN_TTL, PASSWORDS
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from oauth_person import MemoryTokenStorage, Person, oauth_provider
from server_calls import bearer, call

from memory.server.oauth.store import OAuthStore

CHATGPT_CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"
CHATGPT_CONNECTOR_CALLBACK = "https://chatgpt.com/connector/oauth/c_0123456789abcdef"

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def connected(server, person: Person, storage: MemoryTokenStorage, *, mcp_url: str | None = None,
                    **options) -> AsyncIterator[Client]:
    url = mcp_url or server.mcp_url
    provider = oauth_provider(url, person, storage, **options)
    async with httpx2.AsyncClient(auth=provider, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def test_a_chatgpt_client_registers_signs_in_consents_calls_tools_and_refreshes(as_server):
    person, storage = Person("alice", PASSWORDS["alice"]), MemoryTokenStorage()
    marker = uuid.uuid4().hex
    flows_before = OAuthStore(as_server.data_dir).counts()
    async with connected(as_server, person, storage, redirect_uri=CHATGPT_CALLBACK) as client:
        stored = await call(client, "store_memory", {"text": f"Alice likes green tea {marker}"})
        first = storage.tokens
        await asyncio.sleep(ACCESS_TOKEN_TTL + 1)
        hits = await call(client, "search", {"query": f"green tea {marker}"})

    assert [hit["id"] for hit in hits["results"]] == [stored["id"]]
    # Registered through DCR, as a public client with ChatGPT's callback.
    assert storage.client_info is not None and storage.client_info.client_secret is None
    asked = {k: v[0] for k, v in parse_qs(urlsplit(person.authorization_urls[0]).query).items()}
    assert asked["code_challenge_method"] == "S256" and asked["resource"] == as_server.mcp_url
    assert asked["redirect_uri"] == CHATGPT_CALLBACK
    # The consent page names the client, where the code goes, and what it may do.
    consent = person.consent_pages[0]
    assert "Test assistant" in consent and "chatgpt.com" in consent
    assert "memories:read" in consent and "memories:write" in consent
    # The token is this server's, for this resource, for alice through this client.
    token = claims(first.access_token)
    assert token["aud"] == as_server.mcp_url and token["iss"] == as_server.url and token["sub"] == "alice"
    assert token["client_id"] == storage.client_info.client_id and token["jti"]
    assert set(token["scope"].split()) == {"memories:read", "memories:write"}
    assert token["exp"] - token["iat"] == ACCESS_TOKEN_TTL
    # The access token expired in between: the client refreshed, and the refresh token rotated.
    assert len(storage.token_history) == 2 and len(person.authorization_urls) == 1
    assert storage.token_history[1].refresh_token != first.refresh_token
    assert storage.token_history[1].access_token != first.access_token
    # `memory stats` and /metrics count it: one flow started, one code redeemed (a refresh is neither).
    flows = OAuthStore(as_server.data_dir).counts()
    assert flows["flows_started"] == flows_before["flows_started"] + 1
    assert flows["flows_completed"] == flows_before["flows_completed"] + 1


async def test_an_account_of_the_built_in_server_owns_the_same_log_as_memory_token(as_server):
    marker = uuid.uuid4().hex
    async with connected(as_server, Person("alice", PASSWORDS["alice"]), MemoryTokenStorage(),
                         redirect_uri=CHATGPT_CALLBACK) as client:
        stored = await call(client, "store_memory", {"text": f"Shared log {marker}"})
    async with httpx2.AsyncClient(base_url=as_server.url) as http:
        fetched = await http.get(f"/api/v1/memories/{stored['id']}", headers=bearer(as_server.token("alice")))
    assert fetched.status_code == 200 and marker in fetched.json()["text"]


async def test_a_client_identified_by_its_metadata_document_connects_without_registering(as_server, metadata_host):
    url = f"http://127.0.0.1:{metadata_host.server_address[1]}/clients/{uuid.uuid4().hex}.json"
    metadata_host.documents[urlsplit(url).path] = {
        "client_id": url, "client_name": "Metadata Document Assistant",
        "redirect_uris": [CHATGPT_CONNECTOR_CALLBACK], "token_endpoint_auth_method": "none",
    }
    person, storage = Person("alice", PASSWORDS["alice"]), MemoryTokenStorage()
    async with connected(as_server, person, storage, redirect_uri=CHATGPT_CONNECTOR_CALLBACK,
                         client_metadata_url=url) as client:
        info = await call(client, "get_context_info")

    assert "total_memories" in info
    assert storage.client_info.client_id == url
    asked = parse_qs(urlsplit(person.authorization_urls[0]).query)
    assert asked["client_id"] == [url]
    assert "Metadata Document Assistant" in person.consent_pages[0]
    assert claims(storage.tokens.access_token)["client_id"] == url


async def test_an_authorization_request_without_scope_is_granted_the_default_scopes(as_server):
    person, storage = Person("bob", PASSWORDS["bob"], drop_scope=True), MemoryTokenStorage()
    async with connected(as_server, person, storage, redirect_uri=CHATGPT_CALLBACK) as client:
        await call(client, "store_memory", {"text": "written with default scopes"})
    assert "scope" not in parse_qs(urlsplit(person.authorization_urls[0]).query)
    assert set(claims(storage.tokens.access_token)["scope"].split()) == {"memories:read", "memories:write"}


async def test_two_people_connected_through_the_real_flow_never_see_each_others_memories(as_server):
    marker = uuid.uuid4().hex
    async with connected(as_server, Person("alice", PASSWORDS["alice"]), MemoryTokenStorage(),
                         redirect_uri=CHATGPT_CALLBACK) as alice:
        mine = await call(alice, "store_memory", {"text": f"Alice's secret {marker}"})
    async with connected(as_server, Person("bob", PASSWORDS["bob"]), MemoryTokenStorage(),
                         redirect_uri=CHATGPT_CALLBACK) as bob:
        hits = await call(bob, "search", {"query": f"secret {marker}"})
        fetched = await bob.call_tool("fetch", {"id": mine["id"]})
    assert mine["id"] not in [hit["id"] for hit in hits["results"]]
    assert all(marker not in hit["title"] for hit in hits["results"])
    assert fetched.is_error and "no memory with id" in fetched.content[0].text


async def test_a_client_that_calls_the_server_localhost_connects_and_its_token_is_for_this_server(as_server):
    # No public URL: http://localhost:PORT/mcp is this server as much as http://127.0.0.1:PORT/mcp is.
    local = as_server.mcp_url.replace("127.0.0.1", "localhost")
    marker = uuid.uuid4().hex
    person, storage = Person("alice", PASSWORDS["alice"]), MemoryTokenStorage()
    async with connected(as_server, person, storage, mcp_url=local, redirect_uri=CHATGPT_CALLBACK) as client:
        stored = await call(client, "store_memory", {"text": f"Reached through localhost {marker}"})

    asked = {k: v[0] for k, v in parse_qs(urlsplit(person.authorization_urls[0]).query).items()}
    assert asked["resource"] == local
    assert claims(storage.tokens.access_token)["aud"] == as_server.mcp_url  # one canonical audience
    async with httpx2.AsyncClient(base_url=as_server.url) as http:
        fetched = await http.get(f"/api/v1/memories/{stored['id']}", headers=bearer(storage.tokens.access_token))
        elsewhere = await http.get("/authorize", params={
            "response_type": "code", "client_id": storage.client_info.client_id, "redirect_uri": CHATGPT_CALLBACK,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
            "resource": local.replace("localhost", "evil.example")})
    assert fetched.status_code == 200 and marker in fetched.json()["text"]
    # A dynamically registered client has not proven its redirect: the error is shown, not sent there.
    assert elsewhere.status_code == 400 and "location" not in elsewhere.headers
    assert f"issues tokens for {as_server.mcp_url}" in elsewhere.text
