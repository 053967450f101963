"""A real PostgreSQL server for the tests: Debian's package, started by the suite itself.

initdb and pg_ctl run in a temporary directory on a free port. PostgreSQL refuses to run as root,
so when the suite runs as root (CI does) the server runs as the `postgres` user the Debian package
creates. A missing server fails the test with the command that installs it: never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

__all__ = ["PostgresServer", "postgres_bin_dir", "listening_sessions", "terminate"]

_INSTALL_HINT = "PostgreSQL is needed for these tests: apt-get install postgresql (Debian's package)"


def postgres_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres, newest major version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]), reverse=True)
    if found:
        return Path(found[0]).parent
    postgres = shutil.which("postgres")
    if postgres:
        return Path(postgres).parent
    raise RuntimeError(_INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One throwaway cluster; `database()` hands out a fresh, empty database per test."""

    def __init__(self) -> None:
        self.bin_dir = postgres_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="memory-pg-"))
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        self.data = self.root / "cluster"
        self.socket_dir = self.root / "socket"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> "PostgresServer":
        self.socket_dir.mkdir(parents=True)
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "--auth=trust", "--username=postgres", "--encoding=UTF8",
                  "--locale=C.UTF-8", "--no-instructions")
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database, by URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def listening_sessions(url: str) -> list[int]:
    """The backend pids of the servers' listeners on the database of `url` (memory/postgres_watch.py):
    connected and their LISTEN run."""
    import psycopg

    from memory.postgres_watch import APPLICATION_NAME, CHANNEL

    with psycopg.connect(url, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s "
            "AND query = %s ORDER BY pid", (APPLICATION_NAME, f"LISTEN {CHANNEL}")).fetchall()]


def terminate(url: str, pids: list[int]) -> None:
    """End those backends as an operator (or a failover) would: their clients see the connection drop."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
