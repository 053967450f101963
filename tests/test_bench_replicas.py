"""bench/latency.py --replicas runs end to end at a tiny size, so the script behind the replica
numbers in docs/benchmarks.md does not rot: its own PostgreSQL, replicas behind a real haproxy,
and a summary row per replica count with calls that succeeded."""

import subprocess
import sys
from pathlib import Path

LATENCY = Path(__file__).resolve().parents[1] / "bench" / "latency.py"
SUMMARY = "| memories | replicas | load avg | store p50 | retrieve p50 | 4 clients |"


def _table(output: str, header: str) -> list[list[str]]:
    """The rows under `header` (a line's start), as cells, up to the blank line that ends the table."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_replica_bench_measures_one_and_two_replicas_behind_the_balancer():
    run = subprocess.run([sys.executable, str(LATENCY), "--sizes", "50", "--samples", "3", "--concurrency", "4",
                          "--duration", "1", "--replicas", "1", "2"], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    summary = _table(run.stdout, SUMMARY)
    by_count = {int(row[1]): row for row in summary}
    assert sorted(by_count) == [1, 2], summary
    for row in summary:
        calls, server_cpu, haproxy_cpu = float(row[5].removesuffix(" calls/s")), float(row[6]), float(row[7])
        assert calls > 0 and server_cpu > 0 and haproxy_cpu >= 0, row
    # RSS is summed over the replicas: two processes, each with its own model, weigh more than one.
    rss = {count: float(row[9].removesuffix(" MB")) for count, row in by_count.items()}
    assert rss[2] > 1.5 * rss[1], rss

    throughput = _table(run.stdout, "| memories | replicas | clients | calls/s | errors |")
    assert [int(row[4]) for row in throughput] == [0, 0], throughput  # no call failed through the balancer
