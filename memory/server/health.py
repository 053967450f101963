"""Liveness and readiness, for process supervisors and load balancers."""

import os
import tempfile
from pathlib import Path

import anyio.to_thread
import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency

from memory.service import MemoryService

__all__ = ["HealthController", "Readiness"]


class Readiness(msgspec.Struct, kw_only=True):
    ready: bool
    logs_writable: bool
    model_loaded: bool
    problems: list[str] = []


def _writable(directory: Path) -> bool:
    # Creating a file is the only honest test: permissions, a read-only mount and a full disk all fail it.
    try:
        fd, name = tempfile.mkstemp(prefix=".ready-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


class HealthController(Controller):
    path = "/"
    include_in_schema = False

    @get("/healthz", operation_id="healthz", cache_control=None)
    async def alive(self) -> dict[str, str]:
        """200 as soon as the server accepts requests."""
        return {"status": "ok"}

    @get("/readyz", operation_id="readyz")
    async def ready(self, service: NamedDependency[MemoryService]) -> Response[Readiness]:
        """200 once the event logs are writable and the embedding model is loaded; 503 until then."""
        embedder = service.embedder
        model_loaded = bool(getattr(embedder, "ready", True))
        logs_writable = await anyio.to_thread.run_sync(_writable, service.data_dir)
        problems = []
        if not logs_writable:
            problems.append(f"cannot write to {service.data_dir}")
        if not model_loaded:
            error = getattr(embedder, "load_error", None)
            problems.append(f"embedding model failed to load: {error}" if error else "embedding model is loading")
        ready = logs_writable and model_loaded
        return Response(Readiness(ready=ready, logs_writable=logs_writable, model_loaded=model_loaded,
                                  problems=problems), status_code=200 if ready else 503)
