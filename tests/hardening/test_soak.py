"""The soak: 32 clients on a real server for MEMORY_SOAK_SECONDS (default 120) through
bench/soak.py; no call may fail and the server's memory must settle after the warm-up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.soak]

SOAK = Path(__file__).parents[2] / "bench" / "soak.py"
SECONDS = float(os.environ.get("MEMORY_SOAK_SECONDS", 120))


@pytest.mark.timeout(SECONDS + 240)
def test_thirty_two_clients_for_two_minutes_get_no_error_and_the_server_rss_stays_flat(tmp_path):
    numbers = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(SOAK), "--clients", "32", "--users", "4", "--seconds", str(SECONDS),
                          "--json", str(numbers)], capture_output=True, text=True, timeout=SECONDS + 200)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(numbers.read_text())
    for tool, operation in result["operations"].items():
        assert operation["errors"] == 0, f"{tool}: {operation['first_errors']}"
        assert operation["calls"] > 0 and operation["p95_ms"] > 0
    assert result["rss_growth"] <= 0.10, run.stdout
