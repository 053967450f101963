"""Fixtures shared by every test package: the real embedding model and a fresh data directory."""

from pathlib import Path

import os

import pytest
from hypothesis import settings

# CI replays the same examples every run, so a landing is never refused by a new random find;
# a developer's `make test` keeps exploring (and a find there is a bug to fix, then a fixed test).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from projections.embedder import FastEmbedEmbedder, default_embedder


@pytest.fixture(scope="session")
def embedder() -> FastEmbedEmbedder:
    """The real all-MiniLM-L6-v2 model, loaded once per session (about a second)."""
    model = default_embedder()
    assert model.wait_ready(120), model.load_error
    return model


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory on a real filesystem."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL cluster (Debian's package), started once per session by the suite itself."""
    from postgres_server import PostgresServer

    try:
        server = PostgresServer().start()
    except RuntimeError as error:
        pytest.fail(str(error))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the suite's PostgreSQL server, by URL."""
    return postgres_server.database()
