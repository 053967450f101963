"""What every replica of one deployment must share, chosen in one place: with a database URL
(`database_url`, `MEMORY_DATABASE_URL`) it all lives in that PostgreSQL database, so a flow started
on one replica finishes on another, a revocation holds everywhere, a rate limit is one budget
across them and no replica embeds a text another already did; without one, the SQLite stores
under the data directory (and Litestar's in-memory rate limits) that one server has always used.

`shared_stores(settings)` is what `create_app` calls; `auth_store(data_dir, database_url)` is the
same choice for a CLI command that only needs accounts and tokens.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory.server.oauth.storage import AuthStore
from memory.server.settings import ServerSettings
from projections.embedding_cache import EmbeddingCache

__all__ = ["SharedStores", "shared_stores", "auth_store"]


@dataclass
class SharedStores:
    """`auth`: accounts, sessions, clients, codes, grants, personal tokens and the tallies."""

    auth: AuthStore
    #: Litestar stores by name (`Litestar(stores=...)`): the rate limits' budgets. Empty on SQLite,
    #: where Litestar's default (in memory, per process) is what one server needs.
    rate_limits: dict[str, Any] = field(default_factory=dict)
    #: A person's key -> their embedding cache (`MemoryService(embedding_caches=...)`); None on
    #: SQLite, where each person's cache is a table of their projections file.
    embedding_caches: Callable[[str], EmbeddingCache] | None = None
    #: The psycopg pool the PostgreSQL stores share; None on SQLite.
    pool: Any = None
    _closed: bool = field(default=False, repr=False)

    @property
    def backend(self) -> str:
        return "sqlite" if self.pool is None else "postgresql"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.auth.close()
        if self.pool is not None:
            self.pool.close()


def _postgres_pool(database_url: str) -> Any:
    from memory.pgpool import DatabaseUnavailable, open_pool

    try:
        return open_pool(database_url)
    except ImportError as exc:
        raise DatabaseUnavailable("a database URL needs the PostgreSQL driver: "
                                  "pip install 'memory-service[postgres]'") from exc


#: Where several workers on one data directory count their requests.
RATE_LIMITS_FILE = "ratelimits.sqlite"


def shared_stores(settings: ServerSettings) -> SharedStores:
    """The PostgreSQL implementations when `settings.database_url` is set, else the SQLite ones."""
    if settings.database_url is None:
        from memory.server.oauth.ratelimit import CALLS_STORE, OAUTH_STORE, SqliteWindows
        from memory.server.oauth.store import OAuthStore

        # Several workers on one data directory count every request in one file; one process
        # keeps its windows in memory (Litestar's default store).
        windows = {} if settings.workers <= 1 else {
            name: SqliteWindows(Path(settings.data_dir) / RATE_LIMITS_FILE, name) for name in (OAUTH_STORE, CALLS_STORE)}
        return SharedStores(auth=OAuthStore(settings.data_dir), rate_limits=windows)
    from memory.server.kvstore import PostgresStore
    from memory.server.oauth.pgstore import PostgresOAuthStore
    from memory.server.oauth.ratelimit import CALLS_STORE, OAUTH_STORE
    from projections.pg_embedding_cache import postgres_embedding_caches

    pool = _postgres_pool(settings.database_url)
    return SharedStores(auth=PostgresOAuthStore(pool), pool=pool,
                        rate_limits={name: PostgresStore(pool, name) for name in (OAUTH_STORE, CALLS_STORE)},
                        embedding_caches=postgres_embedding_caches(pool))


def auth_store(data_dir: str, database_url: str | None = None) -> AuthStore:
    """Accounts and tokens alone (what `memory user ...` and `memory token` need); close it after use."""
    if database_url is None:
        from memory.server.oauth.store import OAuthStore

        return OAuthStore(data_dir)
    from memory.server.oauth.pgstore import PostgresOAuthStore

    return PostgresOAuthStore(_postgres_pool(database_url), owns_pool=True)
