"""Helpers the hardening tests share (conftest.py is not importable): reading logs as stored,
running the CLI as an operator would, and a pool of threads released together."""

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from memory.identity import LOCAL_ISSUER, Identity
from memory.log import LOG_FILE, USERS_DIR, log_path

MEMORY = Path(sys.executable).parent / "memory"


def user(name: str) -> Identity:
    return Identity(LOCAL_ISSUER, name)


def log_rows(data_dir: Path, name: str) -> list[tuple[int, str, str]]:
    """(seq, event_id, type) of every event in `name`'s log, read-only, in seq order."""
    path = log_path(data_dir, user(name))
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute("SELECT seq, event_id, type FROM events ORDER BY seq").fetchall()


def log_heads(data_dir: Path) -> dict[str, int]:
    """The last seq of every log in the data dir, by folder."""
    heads = {}
    for path in sorted((Path(data_dir) / USERS_DIR).glob(f"*/{LOG_FILE}")):
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            heads[path.parent.name] = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    return heads


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def memory_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(MEMORY), *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=300)


