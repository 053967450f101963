"""`memory serve --workers N`: N processes answering on one port over one data directory.

uvicorn's own multi-process mode: the parent binds the socket and supervises N spawned workers
(restarting one that dies); each worker builds its app from `worker_app`, a factory that reads
the parent's effective settings from the environment (a spawned process inherits nothing else).

What the workers share, and how each thing stays right across them:

- The logs: SQLite's own locking (`BEGIN IMMEDIATE`) serialises appends to one person's log
  across processes, so seqs stay gapless and the chain unforked; a file lock per person makes
  each check-then-append of the service atomic across workers too (memory/userlock.py).
- Projections are per worker (memory/userstore.py): worker k claims slot k with a lock file and
  keeps `projections.worker<k>.sqlite` (slot 0 the plain `projections.sqlite`); before each call
  it catches up with what the others appended, and a poll every 0.5 s does the same for every
  log it has open, so an erasure leaves every worker's files within a second or so.
- Tallies for `memory stats`: each worker adds its own counts to the OAuth store (additions, so
  they sum). Prometheus counters: prometheus_client's multiprocess mode (a directory of per-pid
  files, summed at scrape time by whichever worker answers /metrics).
- Rate limits: one fixed-window counter per key in a SQLite file, incremented atomically
  (memory/server/oauth/ratelimit.py), so a limit trips at its limit, not at N times it.
"""

import atexit
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from memory.server.settings import ServerSettings
from memory.userstore import remove_replicas

__all__ = ["serve_workers", "worker_app", "claim_slot", "METRICS_DIR_ENV"]

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it
_SETTINGS_ENV = "MEMORY_WORKER_SETTINGS"
# The slot lock stays held (its file open) for the life of the worker process.
_held_slot: list[Any] = []


def claim_slot(data_dir: str | Path, workers: int) -> int:
    """The first free slot below `workers`, held by an exclusive lock until this process exits.
    A slot at or above `workers` only while a replacement worker overlaps the one it replaces
    (uvicorn's restart on SIGHUP); such a worker removes those files again when it exits."""
    folder = Path(data_dir) / "workers"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    slot = 0
    while True:
        handle = (folder / f"slot-{slot}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            slot += 1
            continue
        _held_slot.append(handle)
        return slot


def serve_workers(settings: ServerSettings, **uvicorn_options: Any) -> None:
    """Run `settings.workers` worker processes on settings.host:port until a signal stops them."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    remove_replicas(settings.data_dir, keep=settings.workers)
    metrics_dir = tempfile.mkdtemp(prefix="memory-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    os.environ[_SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    # A worker busy with a cold person's projections must not be taken for hung (and killed
    # with its connections) on a loaded machine: uvicorn's 5 s health check is too short.
    config = uvicorn.Config("memory.server.workers:worker_app", factory=True, workers=settings.workers,
                            host=settings.host, port=settings.port, timeout_worker_healthcheck=30,
                            **uvicorn_options)
    socket = config.bind_socket()
    try:
        Multiprocess(config, sockets=[socket]).run()
    finally:
        socket.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """The app of one worker process (uvicorn calls this in each one)."""
    from prometheus_client import multiprocess

    from memory.server.app import create_app
    from memory.service import MemoryService
    from projections.embedder import default_embedder

    settings = msgspec.json.decode(os.environ[_SETTINGS_ENV], type=ServerSettings)
    slot = claim_slot(settings.data_dir, settings.workers)
    service = MemoryService(settings.data_dir, default_embedder(), replica=slot)
    service.follow_others()
    # Counts of a live gauge (requests in progress) must not outlive this process.
    atexit.register(multiprocess.mark_process_dead, os.getpid())
    if slot >= settings.workers:
        atexit.register(remove_replicas, settings.data_dir, settings.workers)
    app = create_app(settings, service=service)
    # The app's logging config (applied as it is built) resets uvicorn's child loggers, which
    # uvicorn set up before calling this factory: the app logs each request itself (no query).
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate = [], False
    return app
