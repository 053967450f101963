"""Behind a proxy at https://mem.example.com, everything a client is told names that URL: metadata
documents, the resource and token audience, OpenAPI's server and every fetch url."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from server_calls import bearer, call

from memory.server.process import ServerProcess

PUBLIC = "https://mem.example.com"
MEMORY = str(Path(sys.executable).parent / "memory")


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Reached on loopback (as the proxy would), told its public URL by the environment.
    data_dir = tmp_path_factory.mktemp("proxied") / "data"
    with ServerProcess(data_dir, env={"MEMORY_PUBLIC_URL": PUBLIC}) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def public_token(proxied: ServerProcess) -> str:
    return subprocess.run([MEMORY, "token", "--data-dir", str(proxied.data_dir), "--user", "alice",
                           "--public-url", PUBLIC], check=True, capture_output=True, text=True).stdout.strip()


def test_every_metadata_document_names_the_public_url(proxied):
    with httpx2.Client(base_url=proxied.url) as http:
        resource = http.get("/.well-known/oauth-protected-resource").json()
        server = http.get("/.well-known/oauth-authorization-server").json()
        openapi = http.get("/schema/openapi.json").json()
        challenge = http.post("/mcp", json={}).headers["www-authenticate"]
    assert resource["resource"] == f"{PUBLIC}/mcp" and resource["authorization_servers"] == [PUBLIC]
    assert server["issuer"] == PUBLIC
    urls = [v for k, v in server.items() if k.endswith(("_endpoint", "_uri")) and isinstance(v, str)]
    assert urls and all(url.startswith(f"{PUBLIC}/") for url in urls), urls
    assert openapi["servers"] == [{"url": PUBLIC}]
    assert f'resource_metadata="{PUBLIC}/.well-known/oauth-protected-resource"' in challenge


def test_tokens_are_for_the_public_resource_and_others_are_refused(proxied, public_token):
    claims = jwt.decode(public_token, options={"verify_signature": False})
    assert claims["aud"] == f"{PUBLIC}/mcp" and claims["iss"] == PUBLIC
    loopback_token = proxied.token("alice")  # audience http://127.0.0.1:PORT/mcp
    with httpx2.Client(base_url=proxied.url) as http:
        assert http.get("/api/v1/entities", headers=bearer(public_token)).status_code == 200
        assert http.get("/api/v1/entities", headers=bearer(loopback_token)).status_code == 401


@pytest.mark.anyio
async def test_fetch_and_search_urls_use_the_public_url(proxied, public_token):
    async with httpx2.AsyncClient(headers=bearer(public_token), timeout=60) as http:
        async with Client(streamable_http_client(proxied.mcp_url, http_client=http)) as client:
            stored = await call(client, "store_memory", {"text": "The proxy test memory about tulips"})
            fetched = await call(client, "fetch", {"id": stored["id"]})
            found = await call(client, "search", {"query": "tulips"})
    assert fetched["url"] == f"{PUBLIC}/memories/{stored['id']}"
    assert found["results"] and all(hit["url"].startswith(f"{PUBLIC}/memories/") for hit in found["results"])
