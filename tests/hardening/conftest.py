"""One real `memory serve` shared by the hardening tests that only talk to it (headers, fuzzing,
isolation, erasure); tests that kill, starve or damage a server start their own."""

from collections.abc import Iterator

import httpx2
import pytest

from memory.server.process import ServerProcess


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def hardening_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hardening")
    with ServerProcess(root / "data", log_file=root / "server.log",
                       extra_args=["--oauth-rate-limit", "100000"]) as running:
        running.wait_ready()
        yield running


@pytest.fixture()
def http(hardening_server: ServerProcess) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=hardening_server.url, timeout=30) as client:
        yield client
