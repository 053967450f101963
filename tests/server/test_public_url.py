"""Behind a proxy at https://mem.example.com, everything a client is told names that URL: metadata
documents, the resource and token audience, OpenAPI's server and every fetch url."""

import os
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

from memory.server.config import SERVER_RECORD
from memory.server.process import ServerProcess, free_port

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


def _cli_env(**extra: str) -> dict[str, str]:
    """The operator's environment without any MEMORY_* setting of the test run, plus `extra`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MEMORY_")} | extra


def cli_token(data_dir: Path, *args: str, **env: str) -> str:
    return subprocess.run([MEMORY, "token", "--data-dir", str(data_dir), "--user", "alice", *args], check=True,
                          capture_output=True, text=True, env=_cli_env(**env), cwd=data_dir.parent).stdout.strip()


@pytest.fixture(scope="module")
def on_its_own_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # `make serve PORT=...`: the port on the command line, nothing in the environment or a file.
    data_dir = tmp_path_factory.mktemp("port") / "data"
    port = free_port()
    assert port != 8000
    with ServerProcess(data_dir, port=port) as running:
        yield running


def test_memory_token_names_the_server_running_on_its_data_dir_without_being_told_the_url(on_its_own_port):
    token = cli_token(on_its_own_port.data_dir)  # the README's command, as is

    assert jwt.decode(token, options={"verify_signature": False})["aud"] == on_its_own_port.mcp_url
    with httpx2.Client(base_url=on_its_own_port.url) as http:
        assert http.get("/api/v1/entities", headers=bearer(token)).status_code == 200


def test_memory_token_reads_the_public_url_as_serve_does_flag_over_environment_over_config_file(tmp_path):
    data_dir = tmp_path / "data"
    config = tmp_path / "memory.toml"
    config.write_text('public_url = "https://from-file.example"\n')

    def audience(*args: str, **env: str) -> str:
        return jwt.decode(cli_token(data_dir, *args, **env), options={"verify_signature": False})["aud"]

    assert audience() == "http://127.0.0.1:8000/mcp"
    assert audience(MEMORY_PORT="8011") == "http://127.0.0.1:8011/mcp"
    assert audience(MEMORY_CONFIG=str(config)) == "https://from-file.example/mcp"
    assert audience(MEMORY_CONFIG=str(config), MEMORY_PUBLIC_URL="https://from-env.example") == \
        "https://from-env.example/mcp"
    assert audience("--public-url", "https://from-flag.example", MEMORY_PUBLIC_URL="https://from-env.example") == \
        "https://from-flag.example/mcp"
    refused = subprocess.run([MEMORY, "token", "--data-dir", str(data_dir), "--user", "alice"], capture_output=True,
                             text=True, env=_cli_env(MEMORY_PUBLIC_URL="ftp://nowhere"))
    assert refused.returncode == 2 and "public URL must be an http(s) URL" in refused.stderr


def test_the_recorded_url_gives_way_to_any_setting_that_places_the_server(on_its_own_port, tmp_path):
    config = tmp_path / "memory.toml"
    config.write_text("port = 8123\n")

    def audience(**env: str) -> str:
        token = cli_token(on_its_own_port.data_dir, **env)
        return jwt.decode(token, options={"verify_signature": False})["aud"]

    assert audience(MEMORY_CONFIG=str(config)) == "http://127.0.0.1:8123/mcp"
    assert audience(MEMORY_PUBLIC_URL=PUBLIC) == f"{PUBLIC}/mcp"
    (on_its_own_port.data_dir / SERVER_RECORD).write_text("{not json")
    try:
        assert audience() == "http://127.0.0.1:8000/mcp"  # a damaged record is ignored, not half-trusted
    finally:
        on_its_own_port.stop()
        on_its_own_port.start()  # and the next start writes a sound one
    assert audience() == on_its_own_port.mcp_url


def test_localhost_names_the_same_server_as_127_0_0_1_when_no_public_url_is_set(on_its_own_port):
    port = on_its_own_port.port
    local = f"http://localhost:{port}"
    with httpx2.Client(base_url=on_its_own_port.url) as http:
        def metadata(host: str) -> str:
            return http.get("/.well-known/oauth-protected-resource", headers={"Host": host}).json()["resource"]

        challenge = http.post("/mcp", json={}, headers={"Host": f"localhost:{port}"}).headers["www-authenticate"]
        assert metadata(f"localhost:{port}") == f"{local}/mcp"
        assert f'resource_metadata="{local}/.well-known/oauth-protected-resource"' in challenge
        # Anything that is not this server under a loopback name gets the one canonical answer.
        for host in (f"evil.example:{port}", f"localhost:{port + 1}", "localhost", f"127.0.0.2:{port}"):
            assert metadata(host) == on_its_own_port.mcp_url, host

        for spelling in (local, f"http://[::1]:{port}"):
            assert http.get("/api/v1/entities", headers=bearer(cli_token(
                on_its_own_port.data_dir, "--public-url", spelling))).status_code == 200, spelling
        for other in (f"http://localhost:{port + 1}", f"http://evil.example:{port}", f"https://localhost:{port}"):
            assert http.get("/api/v1/entities", headers=bearer(cli_token(
                on_its_own_port.data_dir, "--public-url", other))).status_code == 401, other
