"""Fixtures shared by every test package: the real embedding model and a fresh data directory."""

from pathlib import Path

import pytest

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
