"""/metrics in Prometheus text format, and the tool-call instrumentation behind it.

Three kinds of numbers: Litestar's Prometheus middleware counts HTTP requests; the tool wrapper
counts calls, outcomes and latencies; a collector reads the data directory at scrape time
(users, active users, memories, events, projection lag, OAuth flows). Those are recomputed only
when a log file changed (or a minute passed, for "active in the last day"): a scrape of an idle
server costs one stat() per log.

With several workers (`memory serve --workers N`) every worker writes its counters to files of
its own (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR set by the parent) and
whichever worker answers a scrape sums them; `memory_worker_tool_calls` stays per worker (a
`pid` label), so the spread of calls over the workers shows.

Who may scrape: with `metrics_token` set, whoever sends it as a bearer token; without, loopback
clients only. Behind a reverse proxy on the same host every client looks like loopback unless
`forwarded_allow_ips` names the proxy, so set a token or keep /metrics off the proxy.
"""

import functools
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from memory.log import LOG_FILE, USERS_DIR
from memory.server.auth import PRINCIPAL_SCOPE_KEY, Principal
from memory.server.logs import log_fields
from memory.server.oauth.storage import AuthStore
from memory.server.request_ids import request_id_of
from memory.service import MemoryService
from memory.stats import TOOL_CALL_COUNTER, collect_stats

__all__ = ["instrument_tool", "http_metrics", "metrics_handler", "ToolCallTally", "ERRORS",
           "TOOL_CALLS", "TOOL_SECONDS"]

tool_logger = logging.getLogger("memory.tools")

TOOL_CALLS = Counter("memory_tool_calls", "MCP tool calls by tool and outcome (ok or error).", ["tool", "outcome"])
TOOL_SECONDS = Histogram("memory_tool_call_duration_seconds", "MCP tool call latency.", ["tool"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ERRORS = Counter("memory_errors", "Requests that failed on the server's side, by kind.", ["kind"])
WORKER_CALLS = Gauge("memory_worker_tool_calls", "MCP tool calls this server process answered (with several "
                     "workers, one series per worker pid).", multiprocess_mode="all")
_LOOPBACK = ("127.0.0.1", "::1")
_STATS_MAX_AGE_SECONDS = 60.0


class ToolCallTally:
    """Tool calls by tool and outcome, kept for `memory stats` beside the Prometheus counters (which
    die with the process): added up in memory, written to the server's store now and then
    (`flush`), so a call costs no extra write."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, tool: str, outcome: str) -> None:
        key = TOOL_CALL_COUNTER.format(tool=tool, outcome=outcome)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def flush(self, store: AuthStore) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return
        try:
            store.add_counts(counts)
        except BaseException:
            with self._lock:  # kept for the next flush
                for key, n in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + n
            raise


def instrument_tool(name: str, tool: Callable[..., Any], tally: ToolCallTally | None = None) -> Callable[..., Any]:
    """Count, time and log each call of `tool` (an async MCP tool taking `ctx`); the signature the
    SDK reads stays the tool's own."""

    @functools.wraps(tool)
    async def instrumented(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        outcome = "error"
        try:
            result = await tool(*args, **kwargs)
            outcome = "ok"
            return result
        finally:
            seconds = time.perf_counter() - began
            TOOL_CALLS.labels(name, outcome).inc()
            WORKER_CALLS.inc()
            if tally is not None:
                tally.add(name, outcome)
            TOOL_SECONDS.labels(name).observe(seconds)
            request = getattr(getattr(kwargs.get("ctx"), "request_context", None), "request", None)
            principal = request.scope.get(PRINCIPAL_SCOPE_KEY) if request is not None else None
            tool_logger.info("tool %s %s", name, outcome, extra=log_fields(
                event="tool_call", tool=name, outcome=outcome,
                request_id=request_id_of(request.scope) if request is not None else None,
                user=principal.identity.key if isinstance(principal, Principal) else None,
                duration_ms=round(seconds * 1000, 2)))

    return instrumented


class _DataDirCollector(Collector):
    def __init__(self, service: MemoryService, oauth_store: AuthStore | None):
        self._service = service
        self._oauth = oauth_store
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple, list] = (0.0, (), [])

    def _fingerprint(self) -> tuple:
        marks = []
        for file in sorted(self._service.data_dir.glob(f"{USERS_DIR}/*/{LOG_FILE}*")):
            try:
                stat = file.stat()
            except FileNotFoundError:  # a WAL checkpointed away meanwhile
                continue
            marks.append((file.name, stat.st_mtime_ns, stat.st_size))
        return tuple(marks)

    def collect(self) -> Iterator[Any]:
        with self._lock:
            taken, fingerprint, families = self._cached
            now = self._fingerprint()
            if now != fingerprint or time.monotonic() - taken > _STATS_MAX_AGE_SECONDS:
                families = self._families()
                self._cached = (time.monotonic(), now, families)
        yield from families
        yield from self._lag()

    def _families(self) -> list:
        stats = collect_stats(self._service.logs, operations=False)
        users = GaugeMetricFamily("memory_users", "People with a log.", value=stats.users)
        active = GaugeMetricFamily("memory_daily_active_users", "People whose log grew in the last 24 hours.",
                                   value=stats.daily_active_users)
        memories = GaugeMetricFamily("memory_memories_per_user", "Memories per person (stored minus erased).",
                                     labels=["stat"])
        for stat, value in (("min", stats.memories_min), ("median", stats.memories_median),
                            ("max", stats.memories_max)):
            memories.add_metric([stat], value)
        events = CounterMetricFamily("memory_events_appended", "Events in all logs (logs only grow).",
                                     value=stats.events)
        families = [users, active, memories, events]
        if self._oauth is not None:
            counts = self._oauth.counts()
            flows = CounterMetricFamily("memory_oauth_flows", "OAuth authorization flows by stage.", labels=["stage"])
            flows.add_metric(["started"], counts["flows_started"])
            flows.add_metric(["completed"], counts["flows_completed"])
            families.append(flows)
        return families

    def _lag(self) -> Iterator[Any]:
        # Cheap and live: two integers per open user.
        lags = [store.log.last_seq() - store.view.checkpoint for store in self._service.users.open_stores()]
        lag = GaugeMetricFamily("memory_projection_lag_events", "Log head seq minus projection checkpoint, "
                                "over the logs this process has open.", labels=["stat"])
        lag.add_metric(["sum"], sum(lags))
        lag.add_metric(["max"], max(lags, default=0))
        yield lag


def _process_metrics() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several workers: the counters of every one of them, summed from their files.
        merged = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)
    return generate_latest(REGISTRY)


def http_metrics() -> PrometheusConfig:
    return PrometheusConfig(app_name="memory", prefix="memory_http", group_path=True, exclude=["/metrics"])


def metrics_handler(service: MemoryService, oauth_store: AuthStore | None, token: str | None) -> Any:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DataDirCollector(service, oauth_store))

    @get("/metrics", include_in_schema=False, sync_to_thread=True, cache_control=None)
    def metrics(request: Request) -> Response[bytes]:
        """Prometheus text format: HTTP, tool calls, and the data directory's numbers."""
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise NotAuthorizedException("/metrics needs the metrics token as a bearer token")
        elif request.client is None or request.client.host not in _LOOPBACK:
            raise PermissionDeniedException("/metrics answers loopback clients only (or set metrics_token)")
        body = _process_metrics() + generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
