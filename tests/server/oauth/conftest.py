"""A real `memory serve` with the built-in authorization server, short access tokens, accounts
created with `memory user add`, and a second local server that hosts a client metadata document."""

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from memory.server.process import ServerProcess, free_port

#: Access tokens live this long on the test server, so a test sees the client refresh.
ACCESS_TOKEN_TTL = 2
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


def add_user(data_dir: Path, name: str, password: str) -> subprocess.CompletedProcess:
    memory = Path(sys.executable).parent / "memory"
    return subprocess.run([str(memory), "user", "add", name, "--data-dir", str(data_dir)], input=f"{password}\n",
                          capture_output=True, text=True)


@pytest.fixture(scope="session")
def as_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("oauth") / "data"
    for name, password in PASSWORDS.items():
        assert add_user(data_dir, name, password).returncode == 0
    process = ServerProcess(data_dir, extra_args=["--allow-loopback-client-metadata",
                                                  "--access-token-ttl", f"{ACCESS_TOKEN_TTL}s",
                                                  "--oauth-rate-limit", "10000"])
    with process as running:
        running.wait_ready()
        yield running


class _Documents(ThreadingHTTPServer):
    documents: dict[str, dict]


class _DocumentHandler(BaseHTTPRequestHandler):
    server: _Documents

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        document = self.server.documents.get(self.path)
        body = json.dumps(document).encode() if document is not None else b"{}"
        self.send_response(200 if document is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="session")
def metadata_host() -> Iterator[_Documents]:
    """A second local server, where client metadata documents live: `host.documents[path] = {...}`."""
    host = _Documents(("127.0.0.1", free_port()), _DocumentHandler)
    host.documents = {}
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    yield host
    host.shutdown()
    host.server_close()
