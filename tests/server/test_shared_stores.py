"""shared_stores(settings): PostgreSQL implementations with a database URL, the SQLite (and
in-memory) ones without; and a database `memory serve` cannot use stops it with one line."""

import os
import subprocess
import sys
from pathlib import Path

from memory.server.kvstore import PostgresStore
from memory.server.oauth.pgstore import PostgresOAuthStore
from memory.server.oauth.ratelimit import CALLS_STORE, OAUTH_STORE
from memory.server.oauth.store import OAuthStore
from memory.server.settings import ServerSettings
from memory.server.shared import auth_store, shared_stores
from projections.pg_embedding_cache import PostgresEmbeddingCache


def test_without_a_database_url_everything_stays_in_the_data_directory(data_dir: Path):
    shared = shared_stores(ServerSettings(data_dir=str(data_dir)))
    try:
        assert shared.backend == "sqlite" and isinstance(shared.auth, OAuthStore)
        assert shared.rate_limits == {} and shared.embedding_caches is None
        assert (data_dir / "oauth.sqlite").exists()
    finally:
        shared.close()


def test_with_a_database_url_every_shared_store_is_in_postgresql(data_dir: Path, postgres_url: str):
    shared = shared_stores(ServerSettings(data_dir=str(data_dir), database_url=postgres_url))
    try:
        assert shared.backend == "postgresql" and isinstance(shared.auth, PostgresOAuthStore)
        assert set(shared.rate_limits) == {OAUTH_STORE, CALLS_STORE}
        assert all(isinstance(store, PostgresStore) for store in shared.rate_limits.values())
        cache = shared.embedding_caches("someone")
        assert isinstance(cache, PostgresEmbeddingCache) and cache.owner == "someone"
        shared.auth.add_user("alice", "h")
        with auth_store(str(data_dir), postgres_url) as cli_store:  # what a CLI command opens
            assert cli_store.users() == ["alice"]
        assert not (data_dir / "oauth.sqlite").exists()
    finally:
        shared.close()
    assert shared.pool.closed


def test_a_database_memory_serve_cannot_use_stops_it_with_one_line(data_dir: Path, postgres_server):
    command = [sys.executable, "-c", "from memory.cli import main; main()", "serve", "--data-dir", str(data_dir),
               "--port", "1"]
    # A URL of another database is refused with the settings (a usage error, 2); an unusable one on start (1).
    for url, code, reason in ((postgres_server.url("no_such_database"), 1, 'database "no_such_database" does not exist'),
                              ("mysql://db/memory", 2, "must be a postgresql:// URL")):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "MEMORY_DATABASE_URL": url})
        assert result.returncode == code and reason in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
