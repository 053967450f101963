"""Two real `memory serve` processes on one PostgreSQL database (`MEMORY_DATABASE_URL`), as two
replicas behind a balancer: one public URL, one key ring (a mounted secret), separate data
directories (until the event log moves to PostgreSQL, each keeps its own logs)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


from server_calls import wait_healthy

from memory.pgpool import open_pool
from memory.server.oauth.passwords import hash_password
from memory.server.oauth.pgstore import PostgresOAuthStore
from memory.server.process import ServerProcess, free_port
from memory.signing import KeyRing

__all__ = ["Replicas", "running_replicas", "PASSWORD"]

PASSWORD = "alice-replica-password"


class Replicas:
    def __init__(self, first: ServerProcess, second: ServerProcess, public_url: str, database_url: str):
        self.first, self.second = first, second
        self.public_url = public_url
        self.database_url = database_url

    @staticmethod
    def direct(server: ServerProcess) -> str:
        """The replica's own address (its settings' URL is the shared public one)."""
        return f"http://127.0.0.1:{server.port}"

    def personal_token(self, name: str, user: str = "alice") -> str:
        """What `memory token --name NAME` makes for the deployment: signed with the shared keys,
        registered in the database."""
        return self.first.token(user, client_id=name)


@contextmanager
def running_replicas(tmp_path: Path, postgres_url: str, env: dict[str, str] | None = None) -> Iterator[Replicas]:
    """Both replicas started, alice's account made (as `memory user add` with the database would)."""
    first_dir, second_dir = tmp_path / "a" / "data", tmp_path / "b" / "data"
    first_dir.mkdir(parents=True)
    second_dir.mkdir(parents=True)
    # One keys directory for both, as a deployment mounts one secret into every replica: the
    # signing keys and the web session's key, which the first replica to start makes there.
    keys = tmp_path / "keys"
    KeyRing(first_dir, keys_dir=keys)
    with PostgresOAuthStore(open_pool(postgres_url), owns_pool=True) as store:
        store.add_user("alice", hash_password(PASSWORD))  # what `memory user add` does with --database-url
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    env = {"MEMORY_DATABASE_URL": postgres_url, "MEMORY_KEYS_DIR": str(keys), **(env or {})}
    first = ServerProcess(first_dir, port=port, public_url=public_url, env=env)
    second = ServerProcess(second_dir, public_url=public_url, env=env)
    with first, second:
        # `start` waited on the public URL, which is the first replica's: wait for the second's own.
        wait_healthy(Replicas.direct(second), second)
        yield Replicas(first, second, public_url, postgres_url)
