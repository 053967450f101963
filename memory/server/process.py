"""`memory serve` as a child process on a loopback port: how the end-to-end tests, the
conformance run and the latency benchmark get a real server, started exactly as an operator would."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from memory.server.auth import ALL_SCOPES, DEFAULT_TOKEN_NAME, issue_personal_token
from memory.server.settings import ServerSettings
from memory.signing import KeyRing

__all__ = ["ServerProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _memory_command() -> list[str]:
    # The installed console script, as an operator runs it; the module when there is none.
    script = shutil.which("memory", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from memory.cli import main; main()"]


def _status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, urllib.error.URLError):
        return None


class ServerProcess:
    """Start with `start()` (or `with`), which returns once /healthz answers 200."""

    def __init__(self, data_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
                 public_url: str | None = None, log_file: str | Path | None = None,
                 extra_args: Iterable[str] = (), env: dict[str, str] | None = None):
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.settings = ServerSettings(data_dir=str(self.data_dir), host=host, port=self.port, public_url=public_url)
        self.log_file = Path(log_file) if log_file else self.data_dir.parent / f"server-{self.port}.log"
        self._extra_args = list(extra_args)
        self._env = env
        self._process: subprocess.Popen | None = None
        self.started_in: float | None = None

    @property
    def url(self) -> str:
        return self.settings.base_url

    @property
    def mcp_url(self) -> str:
        return self.settings.resource_url

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        if self.running:
            raise RuntimeError("already running")
        command = [*_memory_command(), "serve", "--host", self.host, "--port", str(self.port),
                   "--data-dir", str(self.data_dir), "--log-level", "warning", *self._extra_args]
        if self.settings.public_url:
            command += ["--public-url", self.settings.public_url]
        began = time.monotonic()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             env={**os.environ, **(self._env or {})})
        while time.monotonic() - began < timeout:
            if _status(f"{self.url}/healthz", timeout=1.0) == 200:
                self.started_in = time.monotonic() - began
                return self
            if self._process.poll() is not None:
                raise RuntimeError(f"memory serve exited with {self._process.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"memory serve did not answer /healthz within {timeout}s:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _status(f"{self.url}/readyz") == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"/readyz did not turn 200 within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown code runs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(15)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running else None

    def token(self, user: str, scopes: Iterable[str] = ALL_SCOPES, ttl_seconds: int = 3600,
              client_id: str = DEFAULT_TOKEN_NAME) -> str:
        """What `memory token --name CLIENT_ID` would print for this server (made and registered
        in-process, to save a subprocess): in its database when it was given one (MEMORY_DATABASE_URL),
        signed with its keys (MEMORY_KEYS_DIR, else the data dir's)."""
        from memory.server.shared import auth_store

        with auth_store(str(self.data_dir), (self._env or {}).get("MEMORY_DATABASE_URL")) as store:
            keys = KeyRing(self.data_dir, keys_dir=(self._env or {}).get("MEMORY_KEYS_DIR"))
            return issue_personal_token(keys, store, issuer=self.settings.base_url,
                                        audience=self.settings.resource_url, user=user, name=client_id,
                                        scopes=scopes, ttl_seconds=ttl_seconds,
                                        max_ttl_seconds=self.settings.personal_token_max_ttl_seconds)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
