"""/metrics: Prometheus text with tool calls by outcome, their latencies, HTTP requests and the data
directory's numbers; only loopback clients or holders of the metrics token may read it."""

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from server_calls import call, call_error

from memory.server.app import create_app
from memory.server.process import ServerProcess
from memory.server.settings import ServerSettings
from memory.service import MemoryService


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.anyio
async def test_tool_calls_are_counted_by_outcome_and_timed(server, connect, alice, http):
    before = samples(http.get("/metrics").text)
    async with connect(alice) as client:
        await call(client, "store_memory", {"text": "Metrics test: Alice waters the ferns on Sundays"})
        await call_error(client, "fetch", {"id": "no-such-memory"})
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("memory_tool_calls_total", tool="store_memory", outcome="ok") == 1
    assert grew("memory_tool_calls_total", tool="fetch", outcome="error") == 1
    assert grew("memory_tool_call_duration_seconds_count", tool="store_memory") == 1
    assert grew("memory_tool_call_duration_seconds_sum", tool="store_memory") > 0
    assert any(name == "memory_http_requests_total" and dict(labels).get("path") == "/mcp"
               for name, labels in after)
    assert value(after, "memory_users") >= 1 and value(after, "memory_events_appended_total") >= 1
    assert value(after, "memory_memories_per_user", stat="max") >= 1
    assert value(after, "memory_daily_active_users") >= 1
    assert ("memory_projection_lag_events", frozenset({("stat", "max")})) in after
    assert ("memory_oauth_flows_total", frozenset({("stage", "started")})) in after


@pytest.fixture
def service(data_dir, embedder):
    service = MemoryService(data_dir, embedder)
    yield service
    service.close()


def test_without_a_metrics_token_only_loopback_clients_may_scrape(data_dir, service):
    app = create_app(ServerSettings(data_dir=str(data_dir)), service=service)
    with TestClient(app) as client:  # its client address is "testclient", not loopback
        response = client.get("/metrics")
    assert response.status_code == 403 and "loopback" in response.text


def test_with_a_metrics_token_the_token_is_required_from_anywhere(data_dir, service):
    app = create_app(ServerSettings(data_dir=str(data_dir), metrics_token="s3cret-scrape"), service=service)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
    assert ok.status_code == 200 and "memory_users" in ok.text


def test_forwarded_headers_are_ignored_unless_the_proxy_is_named(server, tmp_path):
    # /metrics tells loopback from the rest, so it shows which client address the server believes.
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    with httpx2.Client(base_url=server.url) as http:
        assert http.get("/metrics", headers=spoofed).status_code == 200
    with ServerProcess(tmp_path / "data", extra_args=["--forwarded-allow-ip", "127.0.0.1"]) as proxied:
        with httpx2.Client(base_url=proxied.url) as http:
            assert http.get("/metrics").status_code == 200
            assert http.get("/metrics", headers=spoofed).status_code == 403


def test_every_metric_the_operations_guide_lists_is_published(data_dir, service):
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(memory_\w+)", guide))
    app = create_app(ServerSettings(data_dir=str(data_dir), metrics_token="t"), service=service)
    with TestClient(app) as client:
        client.get("/healthz")
        client.get("/metrics", headers={"Authorization": "Bearer t"})  # the middleware's own metrics exist once used
        published = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
    names = {s.name for family in text_string_to_metric_families(published) for s in family.samples}
    names |= {re.sub(r"_(bucket|count|sum|created)$", "", name) for name in names}
    missing = sorted(d for d in documented if d not in names)
    # Labelled counters appear once something was counted: tool calls and errors need a call.
    assert set(missing) <= {"memory_tool_calls_total", "memory_tool_call_duration_seconds", "memory_errors_total"}, missing


@pytest.mark.anyio
async def test_memory_stats_reports_the_tool_calls_and_error_rate_a_server_counted(tmp_path, connect):
    data_dir = tmp_path / "data"
    with ServerProcess(data_dir) as own:
        token = own.token("erin")
        async with connect(token, url=own.mcp_url) as client:
            await call(client, "store_memory", {"text": "Erin keeps the spare key under the blue pot"})
            await call(client, "retrieve_context", {"query": "spare key"})
            await call_error(client, "fetch", {"id": "no-such-memory"})
    # Stopped gracefully: the counts were written at shutdown, for the CLI to read offline.
    memory = Path(sys.executable).parent / "memory"
    shown = subprocess.run([str(memory), "stats", "--json", "--data-dir", str(data_dir)], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["tool_calls"] == {
        "fetch": {"ok": 0, "error": 1}, "retrieve_context": {"ok": 1, "error": 0}, "store_memory": {"ok": 1, "error": 0}}
    text = subprocess.run([str(memory), "stats", "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=120).stdout
    assert "tool calls: 3, 1 failed (33.3% error rate)" in text
