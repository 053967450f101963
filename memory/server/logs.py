"""Structured logs: one line per request and per tool call, JSON unless a person reads them at a terminal.

A line carries who (the user's hash, never a name or an email), what (method and path, or the
tool), how long and how it ended. Memory text and queries never appear at INFO: they are what
the service exists to keep private, and the log is for operators.
"""

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from litestar.logging import LoggingConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from memory.identity import LOCAL_ISSUER, user_key
from memory.server.auth import PRINCIPAL_SCOPE_KEY, Principal
from memory.server.request_ids import request_id_of
from memory.server.settings import ServerSettings

__all__ = ["JsonFormatter", "TextFormatter", "logging_config", "RequestLogMiddleware", "log_fields",
           "request_logger", "account_hash"]

#: Probes a supervisor or Prometheus repeats every few seconds: logged at DEBUG, not INFO.
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
request_logger = logging.getLogger("memory.requests")


def log_fields(**fields: Any) -> dict[str, Any]:
    """`extra=` for a structured line: the formatters put these beside the message."""
    return {"fields": fields}


def account_hash(name: str) -> str:
    """How a log line names a local account: the hash its request lines carry (`Identity.key`), never the name."""
    return user_key(LOCAL_ISSUER, name)


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname.lower(),
                                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()} {fields}".rstrip()
        return f"{line}\n{self.formatException(record.exc_info)}" if record.exc_info else line


def _formatter(log_format: str) -> type[logging.Formatter]:
    if log_format == "auto":
        # A person at a terminal reads lines; a supervisor or collector parses JSON.
        log_format = "text" if sys.stderr.isatty() else "json"
    return JsonFormatter if log_format == "json" else TextFormatter


def logging_config(settings: ServerSettings) -> LoggingConfig:
    level = settings.log_level.upper()
    formatter = _formatter(settings.log_format)
    quiet = {"level": level, "handlers": ["queue_listener"], "propagate": False}
    return LoggingConfig(
        formatters={"standard": {"()": formatter}},
        root={"handlers": ["queue_listener"], "level": level},
        # uvicorn's loggers write through the same handler (it is started with log_config=None).
        loggers={"litestar": quiet, "uvicorn": quiet, "uvicorn.error": {"level": level, "propagate": True}},
        # Litestar would log every 404 as an "uncaught exception"; the app logs what matters.
        log_exceptions="never",
    )


class RequestLogMiddleware:
    """One line per HTTP request, with the id `RequestIdMiddleware` gave it (the tools record the
    same id in their events and their own log lines)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        began = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            principal = scope.get(PRINCIPAL_SCOPE_KEY)
            user = principal.identity.key if isinstance(principal, Principal) else None
            request_logger.log(
                logging.DEBUG if scope["path"] in _PROBES else logging.INFO,
                "%s %s %s", scope["method"], scope["path"], status,
                extra=log_fields(event="request", request_id=request_id_of(scope), method=scope["method"], path=scope["path"],
                                 status=status, user=user,
                                 duration_ms=round((time.perf_counter() - began) * 1000, 2)),
            )
