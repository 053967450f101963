"""A real `memory serve` with two local accounts (made with `memory user add`), for the person's web pages."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memory.server.process import ServerProcess

PASSWORDS = {"alice": "alice-web-password", "bob": "bob-web-password", "carol": "carol-web-password"}


def add_user(data_dir: Path, name: str, password: str) -> None:
    memory = Path(sys.executable).parent / "memory"
    subprocess.run([str(memory), "user", "add", name, "--data-dir", str(data_dir)], input=f"{password}\n",
                   capture_output=True, text=True, check=True)


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("web") / "data"
    for name, password in PASSWORDS.items():
        add_user(data_dir, name, password)
    with ServerProcess(data_dir, extra_args=["--oauth-rate-limit", "10000"]) as running:
        running.wait_ready()
        yield running
