"""`memory serve --workers N`: N processes answering on one port over one data directory.

uvicorn's own multi-process supervisor: the parent binds the port and supervises N spawned
workers (restarting one that dies); each worker builds its app from `worker_app`, a factory that
reads the parent's effective settings from the environment (a spawned process inherits nothing
else). One change to uvicorn's way: every worker gets a listening socket of its own on the port
(SO_REUSEPORT), so the kernel spreads new connections evenly over the workers. With one shared
socket, whichever worker woke first took them: 16 clients opening at once all landed on one.

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
import socket
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

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
    _refuse_a_taken_port(settings.host, settings.port)
    remove_replicas(settings.data_dir, keep=settings.workers)
    metrics_dir = tempfile.mkdtemp(prefix="memory-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    os.environ[_SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    # A worker busy with a cold person's projections must not be taken for hung (and killed
    # with its connections) on a loaded machine: uvicorn's 5 s health check is too short.
    config = uvicorn.Config("memory.server.workers:worker_app", factory=True, workers=settings.workers,
                            host=settings.host, port=settings.port, timeout_worker_healthcheck=30,
                            **uvicorn_options)
    sockets = [_listening_socket(settings.host, settings.port, config.backlog) for _ in range(settings.workers)]
    logging.getLogger("memory.server").info("%d workers on http://%s:%d", settings.workers, settings.host,
                                            settings.port)
    try:
        _SocketEach(config, sockets=sockets).run()
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _refuse_a_taken_port(host: str, port: int) -> None:
    # SO_REUSEPORT would let these workers join a server already listening there (another
    # `memory serve --workers` of the same user) and split its connections: bind plainly first.
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise SystemExit(f"Error: cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        probe.close()


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Only processes of this same user can join the port (Linux checks the effective uid).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"Error: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(backlog)  # now, so a connection never waits for a worker still starting
    sock.set_inheritable(True)
    return sock


class _SocketEach(Multiprocess):
    """uvicorn's supervisor, giving worker i the i-th socket (when it starts, is restarted after
    dying, or is replaced on SIGHUP) instead of every worker all of them. The loops are uvicorn's."""

    def init_processes(self) -> None:
        for sock in self.sockets:
            process = Process(self.config, [sock])
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = Process(self.config, [self.sockets[idx]])
            new_process.start()
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It failed before serving: the app is broken and would fail the same way again.
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            process = Process(self.config, [self.sockets[idx]])
            process.start()
            self.processes[idx] = process


def worker_app() -> Any:
    """The app of one worker process (uvicorn calls this in each one)."""
    from prometheus_client import multiprocess

    from memory.server.app import create_app

    settings = msgspec.json.decode(os.environ[_SETTINGS_ENV], type=ServerSettings)
    slot = claim_slot(settings.data_dir, settings.workers)
    # Counts of a live gauge (requests in progress) must not outlive this process.
    atexit.register(multiprocess.mark_process_dead, os.getpid())
    if slot >= settings.workers:
        atexit.register(remove_replicas, settings.data_dir, settings.workers)
    # The logs of record, keys and shared stores as `settings` name them (a worker over PostgreSQL
    # appends there, not to SQLite files); the app follows the other workers' appends.
    app = create_app(settings, replica=slot)
    # The app's logging config (applied as it is built) resets uvicorn's child loggers, which
    # uvicorn set up before calling this factory: the app logs each request itself (no query).
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate = [], False
    return app
