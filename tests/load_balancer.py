"""A real load balancer for the replica tests (and bench/latency.py --replicas): Debian's haproxy,
round-robin over N servers.

Every request goes to the next replica in turn, so a test that makes two calls has crossed
replicas. Legacy MCP sessions (protocol 2025-11-25 and older) are stateful in the SDK, so a
session sticks to the replica that opened it by its `Mcp-Session-Id`; session-less calls of the
current protocol are spread freely. A missing haproxy fails the test with the command that
installs it: never a skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["LoadBalancer"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_CONFIG = """\
global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option http-server-close
    # A replica that stops answering is taken out within a second, and a request it refused goes to
    # another: what a production balancer in front of replicas does.
    option redispatch
    retries 2
    default-server check inter 500ms fall 2 rise 1

frontend memory
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /healthz
    stick-table type string len 128 size 100k expire 1h
    stick on req.hdr(mcp-session-id)
    stick store-response res.hdr(mcp-session-id)
{servers}
"""


class LoadBalancer:
    """haproxy in the foreground as a child process; `url` is where clients connect."""

    def __init__(self, backends: list[str]):
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("haproxy is needed for the replica tests: apt-get install haproxy")
        self._binary = binary
        self.port = _free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="memory-lb-"))
        servers = "\n".join(
            f"    server r{i} {backend.split('://', 1)[-1].rstrip('/')}" for i, backend in enumerate(backends)
        )
        self._config = self._dir / "haproxy.cfg"
        self._config.write_text(_CONFIG.format(port=self.port, servers=servers))
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """haproxy's process while it runs (bench/latency.py --replicas counts its CPU apart)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self) -> "LoadBalancer":
        check = subprocess.run([self._binary, "-c", "-f", str(self._config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its config: {check.stdout}{check.stderr}")
        self._process = subprocess.Popen(
            [self._binary, "-db", "-f", str(self._config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self._process.stderr.read().decode(errors='replace')}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("haproxy did not start listening within 10 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "LoadBalancer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
