"""N `memory serve` replicas over one PostgreSQL database behind a round-robin haproxy, for
`bench/latency.py --replicas`: the same balancer the replica tests use (tests/load_balancer.py),
and, without a database URL, a throwaway PostgreSQL started as the tests start theirs
(tests/postgres_server.py). Both are plain classes with no pytest in them, imported from tests/ as
bench/shared_stores.py imports the second, so the bench measures exactly what the tests run.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memory.server.process import ServerProcess, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from load_balancer import LoadBalancer  # noqa: E402

__all__ = ["ReplicaSet", "postgres_database"]


@contextmanager
def postgres_database(url: str | None) -> Iterator[str]:
    """`url` as given, or an empty database on a PostgreSQL cluster that lives as long as the block."""
    if url is not None:
        yield url
        return
    from postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        yield server.database()
    finally:
        server.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


class ReplicaSet:
    """`count` replicas behind one balancer; `url` is the balancer's, the public URL of every replica.

    The first replica serves `data_dir` (the seeded one: its keys/ is every replica's --keys-dir,
    one key ring as in production); replica i > 0 serves `<data_dir's parent>/replica-<i>/data`,
    kept between runs like a real replica's cache, so a later run of the same count starts warm but
    catches up on what other runs appended."""

    def __init__(self, data_dir: Path, count: int, database_url: str, extra_args: list[str],
                 log_dir: Path, tag: str):
        ports = [free_port() for _ in range(count)]
        self.balancer = LoadBalancer([f"http://127.0.0.1:{port}" for port in ports])
        dirs = [data_dir, *(data_dir.parent / f"replica-{i}" / "data" for i in range(1, count))]
        # The environment, not --database-url: ServerProcess.token registers tokens where the replicas
        # check them only when it sees MEMORY_DATABASE_URL.
        env = {"MEMORY_DATABASE_URL": database_url}
        self.servers = [
            ServerProcess(folder, port=port, public_url=self.balancer.url, env=env,
                          log_file=log_dir / f"server-{tag}-r{i}.log",
                          extra_args=[*extra_args, "--keys-dir", str(data_dir / "keys")])
            for i, (folder, port) in enumerate(zip(dirs, ports, strict=True))
        ]
        self.started_in = 0.0

    @property
    def url(self) -> str:
        return self.balancer.url

    @property
    def mcp_url(self) -> str:
        return f"{self.balancer.url}/mcp"

    def direct_mcp_urls(self) -> list[str]:
        """Each replica's own /mcp, past the balancer (a replica answers any loopback Host)."""
        return [f"http://127.0.0.1:{server.port}/mcp" for server in self.servers]

    @property
    def pids(self) -> list[int]:
        return [server.pid for server in self.servers if server.pid is not None]

    def token(self, user: str) -> str:
        return self.servers[0].token(user)

    def start(self, timeout: float = 300.0) -> "ReplicaSet":
        for folder in (server.data_dir for server in self.servers):
            folder.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        # The balancer first: ServerProcess.start waits for /healthz at the public URL, which is the
        # balancer's; it answers once any replica does, so each replica's own address is waited on after.
        self.balancer.start()
        try:
            for server in self.servers:
                server.start(timeout=timeout)
            for server in self.servers:
                direct = f"http://127.0.0.1:{server.port}/readyz"
                while not _answers(direct):
                    if time.monotonic() - began > timeout or not server.running:
                        raise RuntimeError(f"replica on port {server.port} not ready:\n{server.log_tail()}")
                    time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.balancer.stop()

    def __enter__(self) -> "ReplicaSet":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
