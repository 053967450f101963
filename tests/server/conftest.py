"""One real `memory serve` for the whole directory, on a free loopback port with its own data dir,
and the ways tests talk to it: the SDK's own MCP client (both protocol modes) and plain HTTP."""

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from server_calls import cli_token
from web_calls import PASSWORDS, add_user

from memory.server.process import ServerProcess


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("server") / "data"
    with ServerProcess(data_dir) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="session")
def alice(server: ServerProcess) -> str:
    """Alice's token, as `memory token` prints it."""
    return cli_token(server, "alice").strip()


@pytest.fixture(scope="session")
def bob(server: ServerProcess) -> str:
    return server.token("bob")


Connect = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture(scope="session")
def connect(server: ServerProcess) -> Connect:
    """connect(token, mode="auto") -> an open SDK client on /mcp with that bearer token."""

    @asynccontextmanager
    async def open_client(token: str, mode: str = "auto", url: str | None = None) -> AsyncIterator[Client]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            transport = streamable_http_client(url or server.mcp_url, http_client=http)
            async with Client(transport, mode=mode) as client:
                yield client

    return open_client


@pytest.fixture()
def http(server: ServerProcess) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with local accounts (`memory user add`) for the person's web pages (tests/server/web)."""
    data_dir = tmp_path_factory.mktemp("web") / "data"
    for name, password in PASSWORDS.items():
        add_user(data_dir, name, password)
    with ServerProcess(data_dir, extra_args=["--oauth-rate-limit", "10000"]) as running:
        running.wait_ready()
        yield running
