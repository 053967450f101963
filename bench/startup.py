"""Start-up: `memory serve` process start -> /healthz 200 -> first successful retrieve_context.

    .venv/bin/python bench/startup.py [--memories 0 10000] [--repeats 3] [--database-url URL]

With `--database-url postgresql://...` the memories are seeded into that (empty) database and
every start is a cold replica: an empty data dir (its keys copied in, as a shared --keys-dir
would give them), so the first call rebuilds the person's projections from PostgreSQL.

For each data directory (empty, and one user with N memories seeded in-process beforehand as
bench/latency.py seeds them), the server is started `--repeats` times as an operator would
(ServerProcess: the installed `memory` script, a fresh process each time, OS file cache warm after
the first). Times are from just before the process is spawned:
- /healthz: the first 200 of /healthz (polled every 50 ms: up to 50 ms late);
- first call: a `retrieve_context` through the MCP SDK client over HTTP sent right after /healthz
  answered, returned without error (it waits for the embedding model if that is still loading,
  and opens the user's store: projections checked, vector index loaded);
- /readyz after: whether /readyz was 200 by the time the first call returned;
- server RSS (VmRSS) right after that first call: the baseline memory of a server with the model
  loaded and that user's store open.

Target: first successful tool call <= 2 s after process start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_latency import corpus  # noqa: E402
from latency import USER, _client, loadavg, proc_status, seed_to  # noqa: E402

from memory.server.process import ServerProcess, _status  # noqa: E402
from projections.embedder import default_embedder  # noqa: E402


async def first_call(url: str, token: str) -> float:
    http, client = _client(url, token)
    began = time.monotonic()
    async with http, client:
        result = await client.call_tool("retrieve_context", {"query": "what did we decide about the garden?",
                                                             "limit": 10})
        if result.is_error:
            raise RuntimeError(f"retrieve_context failed: {result.content}")
    return time.monotonic() - began


def one_start(data_dir: Path, database_url: str | None = None) -> tuple[float, float, float, bool, int]:
    """(healthz s, first call done s, first call's own duration s, readyz 200 when it returned,
    server VmRSS kB after it)."""
    if database_url:
        # A cold replica: nothing on its disk but the shared keys.
        cold = data_dir.parent / f"replica-{time.monotonic_ns()}"
        shutil.copytree(data_dir / "keys", cold / "keys")
        data_dir = cold
    server = ServerProcess(data_dir, log_file=data_dir.parent / "startup-server.log",
                           extra_args=["--database-url", database_url] if database_url else [])
    token = server.token(USER)  # signs with the data dir's key ring (created on first use), before t0
    began = time.monotonic()
    server.start(timeout=120)
    try:
        healthz = time.monotonic() - began
        call = asyncio.run(first_call(server.mcp_url, token))
        done = time.monotonic() - began
        ready = _status(f"{server.url}/readyz") == 200
        rss = proc_status(server._process.pid).get("VmRSS", 0)
    finally:
        server.stop()
    return healthz, done, call, ready, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, nargs="+", default=[0, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database-url", metavar="URL", help="seed into and serve from this PostgreSQL database "
                                                              "(each start then a cold replica)")
    args = parser.parse_args()
    texts = corpus()
    embedder = default_embedder()
    rows = []
    tmp = tempfile.mkdtemp(prefix="bench-startup-")
    try:
        for count in args.memories:
            data_dir = Path(tmp) / f"data-{count}"
            data_dir.mkdir(parents=True)
            if count:
                seed_to(data_dir, count, texts, False, embedder, args.database_url)
            load = loadavg()
            runs = [one_start(data_dir, args.database_url) for _ in range(args.repeats)]
            rows.append((count, load, runs))
            print(f"[{time.strftime('%H:%M:%S')}] {count:,} memories: {runs}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"Log: {'PostgreSQL, each start a cold replica (empty data dir)' if args.database_url else 'SQLite'}. "
          f"Host: {os.cpu_count()} CPUs, shared; {args.repeats} starts per data directory "
          "(first start's OS file cache may be cold); seconds from spawning `memory serve`.")
    print()
    print("| data dir | load avg | /healthz (median, min-max) | first retrieve_context answered (median, min-max) "
          "| that call alone (median) | /readyz 200 by then | server RSS then | target first call <= 2 s |")
    print("|---|---|---:|---:|---:|---|---:|---|")
    for count, load, runs in rows:
        h = [r[0] for r in runs]
        d = [r[1] for r in runs]
        c = [r[2] for r in runs]
        name = "empty" if count == 0 else f"{count:,} memories, one user"
        met = statistics.median(d) <= 2
        print(f"| {name} | {load} | {statistics.median(h):.2f} s ({min(h):.2f}-{max(h):.2f}) | "
              f"{statistics.median(d):.2f} s ({min(d):.2f}-{max(d):.2f}) | {statistics.median(c):.2f} s | "
              f"{sum(r[3] for r in runs)}/{len(runs)} | {statistics.median(r[4] for r in runs) / 1024:.0f} MB | "
              f"{'met' if met else '**missed**'} |")


if __name__ == "__main__":
    main()
