"""End-to-end latency, throughput and memory of a real `memory serve` as the log of one user grows.

    .venv/bin/python bench/latency.py [--sizes 1000 10000 100000] [--samples 200]
                                      [--concurrency 1 8 16 32] [--duration 10]
                                      [--data-dir DIR] [--exact-seed] [--vocabulary small] [--database-url URL] [--workers 1 2]

With `--database-url postgresql://...` the log lives in that (empty) database, as with
`memory serve --database-url`: the same calls, to compare with the SQLite default.

For each size N (ascending; the data directory is reused, so each size only seeds the difference):

1. Seed: memories are written in-process, in batches of 256, straight through the user's log and
   projections (as bench/core_latency.py does), BEFORE the server opens the data directory.
   By default the seeding embedder embeds each distinct corpus text once (LoCoMo turns when the
   data is beside the repository) and gives "<text> (#i)" the vector of "<text>": the BM25 index,
   the vector matrix and the log have the real sizes, only the 256 batches skip ~N model calls
   (100k texts would take ~10 min at ~170 texts/s). `--exact-seed` embeds every text.
2. Start `memory serve` on 127.0.0.1 (ServerProcess, `--call-rate-limit 1000000`), wait for
   /readyz, warm up, then time sequential `store_memory` and `retrieve_context` calls through the
   MCP SDK's client over HTTP (2026-07-28 stateless mode: one POST per call), end to end.
3. Throughput: C concurrent clients (each its own HTTP connection pool and MCP client), each
   alternating store_memory / retrieve_context for `--duration` seconds; calls/s and errors, and
   the CPU the server and this (client) process used in that window (on a shared host the
   client's own CPU competes with the server's).
4. Server RSS (VmRSS and peak VmHWM of the server process, from /proc) after the size's runs.

`--workers 1 2` repeats steps 2-4 for each worker count (`memory serve --workers N`); before
timing, calls on fresh connections until every worker has served one (a worker opens the
person's projections at its first call); CPU and RSS are then summed over the worker processes.

Targets (printed beside the numbers): retrieve_context p50 <= 10 ms and p95 <= 25 ms at 10k,
p50 <= 25 ms at 100k; store_memory p50 <= 10 ms; >= 200 calls/s with 16 concurrent clients;
server RSS <= 400 MB at 100k.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_latency import corpus, percentiles  # noqa: E402
from http_latency import measure  # noqa: E402

from memory.identity import Identity  # noqa: E402
from memory.server.process import ServerProcess  # noqa: E402
from memory.service import Caller, MemoryService  # noqa: E402
from projections.embedder import default_embedder  # noqa: E402

USER = "bench"
_SUFFIX = re.compile(r" \(#u?\d+\)$")
_TICKS = os.sysconf("SC_CLK_TCK")


class ReusingEmbedder:
    """Seeding only: "<text> (#i)" gets the vector of "<text>", each distinct text embedded once.
    Same model id and dimensions as the real embedder, so the cache and index it fills are the
    server's own."""

    def __init__(self, real):
        self.real = real
        self.model_id = real.model_id
        self.dimensions = real.dimensions
        self._memo: dict[str, np.ndarray] = {}

    def embed_documents(self, texts):
        bases = [_SUFFIX.sub("", t) for t in texts]
        missing = list(dict.fromkeys(b for b in bases if b not in self._memo))
        if missing:
            for b, v in zip(missing, self.real.embed_documents(missing), strict=True):
                self._memo[b] = v
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        return np.stack([self._memo[b] for b in bases])

    def embed_query(self, text):
        return self.real.embed_query(text)


def memory_count(service: MemoryService, caller: Caller) -> int:
    return service.users.get(caller.identity).view.db.execute(
        "SELECT count(*) FROM memories WHERE deleted = 0").fetchone()[0]


def seed_to(data_dir: Path, size: int, texts: list[str], exact: bool, embedder,
            database_url: str | None = None) -> tuple[int, float]:
    """Top the user's log up to `size` memories; (memories added, seconds)."""
    from memory.logs import open_log_directory
    from memory.signing import KeyRing

    began = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = open_log_directory(data_dir, KeyRing(data_dir), database_url)
    service = MemoryService(data_dir, embedder if exact else ReusingEmbedder(embedder), logs=logs)
    caller = Caller(Identity("local", USER), client_id="bench")
    try:
        have = memory_count(service, caller)
        add = max(0, size - have)
        # core_latency.seed numbers texts from 0: offset so every seeded text stays unique.
        rotated = texts[have % len(texts):] + texts[:have % len(texts)]
        if add:
            _seed_from(service, caller, rotated, add, have)
    finally:
        service.close()
    return add, time.perf_counter() - began


def _seed_from(service: MemoryService, caller: Caller, texts: list[str], count: int, first: int) -> None:
    from memory.events import MemoryStored
    from memory.ids import new_uuid7
    from memory.log import EventDraft
    from memory.model import MemoryType, Scope

    store = service.users.get(caller.identity)
    for start in range(0, count, 256):
        drafts = []
        for i in range(start, min(count, start + 256)):
            memory_id = new_uuid7()
            text = f"{texts[i % len(texts)]} (#{first + i})"
            drafts.append(EventDraft(event_id=memory_id, actor=caller.actor, payload=MemoryStored(
                memory_id=memory_id, text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL)))
        store.append(drafts)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, threads included) used so far by a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def server_pids(pid: int) -> list[int]:
    """The server process and, with --workers, its worker processes."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [pid, *children]


def total_cpu(pid: int) -> float:
    return sum(proc_cpu(p) for p in server_pids(pid) if Path(f"/proc/{p}").exists())


def total_rss(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in kB, summed over the server's processes (the supervisor's included)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    for p in server_pids(pid):
        for key, value in proc_status(p).items():
            out[key] += value
    return out


async def warm_workers(url: str, token: str, workers: int, limit: int = 200) -> None:
    """Calls on fresh connections until each of `workers` processes answered one (/metrics
    `memory_worker_tool_calls` has a series per worker pid)."""
    from prometheus_client.parser import text_string_to_metric_families

    base = url.rsplit("/mcp", 1)[0]
    for _ in range(limit):
        http, client = _client(url, token)
        async with http, client:
            await client.call_tool("get_context_info", {})
        async with httpx2.AsyncClient(timeout=30) as scrape:
            text = (await scrape.get(f"{base}/metrics")).text
        served = [s.value for f in text_string_to_metric_families(text) if f.name == "memory_worker_tool_calls"
                  for s in f.samples]
        if len([v for v in served if v > 0]) >= workers:
            return
    raise RuntimeError(f"not every one of {workers} workers answered a call in {limit} tries")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _client(url: str, token: str):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    return http, Client(streamable_http_client(url, http_client=http), mode="auto")


async def sequential(url: str, token: str, samples: int, texts: list[str], tag: str,
                     warmup: int = 10) -> dict[str, list[float]]:
    return await measure(url, token, "auto", samples, texts, tag=tag, warmup=warmup)


async def throughput(url: str, token: str, clients: int, duration: float, texts: list[str],
                     tag: str) -> tuple[int, int, float, list[float]]:
    """(successful calls, errors, seconds, per-call latencies ms) with `clients` concurrent clients."""
    latencies: list[float] = []
    counts = {"ok": 0, "error": 0}
    deadline = 0.0

    async def one(n: int) -> None:
        rng = random.Random(100 + n)
        http, client = _client(url, token)
        async with http, client:
            await ready.wait()
            i = 0
            while time.perf_counter() < deadline:
                if i % 2 == 0:
                    tool, arguments = "store_memory", {"text": f"{rng.choice(texts)} [tp {tag} {clients} {n} {i}]"}
                else:
                    tool, arguments = "retrieve_context", {"query": rng.choice(texts)[:120], "limit": 10}
                i += 1
                began = time.perf_counter()
                try:
                    result = await client.call_tool(tool, arguments)
                    ok = not result.is_error
                except Exception:  # noqa: BLE001 - any failure is an error of the run
                    ok = False
                latencies.append((time.perf_counter() - began) * 1000)
                counts["ok" if ok else "error"] += 1

    ready = asyncio.Event()
    tasks = [asyncio.create_task(one(n)) for n in range(clients)]
    await asyncio.sleep(0.2)  # let the clients open
    began = time.perf_counter()
    deadline = began + duration
    ready.set()
    await asyncio.gather(*tasks)
    return counts["ok"], counts["error"], time.perf_counter() - began, latencies


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--samples", type=int, default=200, help="sequential timed calls per tool and size")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--data-dir", type=Path, help="reuse (and keep) this data directory; default a temporary one")
    parser.add_argument("--vocabulary", choices=["realistic", "small"], default="realistic",
                        help="memory and query text: LoCoMo turns, or 12 words of 20 (every word common)")
    parser.add_argument("--exact-seed", action="store_true", help="embed every seeded text (slow: ~170 texts/s)")
    parser.add_argument("--database-url", metavar="URL", help="keep the log in this PostgreSQL database")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="worker processes to compare (--workers)")
    args = parser.parse_args()
    # As the environment, not the flag: ServerProcess.token registers the token in the database the
    # server checks tokens against only when it sees MEMORY_DATABASE_URL.
    database = {"MEMORY_DATABASE_URL": args.database_url} if args.database_url else None

    texts = corpus(args.vocabulary)
    embedder = default_embedder()
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="bench-latency-")
        data_dir = Path(tmp) / "data"
    else:
        data_dir = args.data_dir
    runs = []
    try:
        for size in sorted(args.sizes):
            added, seed_s = seed_to(data_dir, size, texts, args.exact_seed, embedder, args.database_url)
            print(f"[{time.strftime('%H:%M:%S')}] size {size:,}: seeded {added:,} in {seed_s:.1f} s; "
                  f"load {loadavg()}", file=sys.stderr, flush=True)
            for workers in args.workers:
                log_file = data_dir.parent / f"server-{size}-{workers}.log"
                with ServerProcess(data_dir, log_file=log_file, extra_args=[
                        "--call-rate-limit", "1000000", "--workers", str(workers)], env=database) as server:
                    server.wait_ready(timeout=300)
                    pid = server._process.pid
                    token = server.token(USER)
                    if workers > 1:
                        asyncio.run(warm_workers(server.mcp_url, token, workers))
                    load_before = loadavg()
                    tag = f"{size}w{workers}"
                    seq = asyncio.run(sequential(server.mcp_url, token, args.samples, texts, tag))
                    tps = []
                    for clients in args.concurrency:
                        cpu_server, cpu_client = total_cpu(pid), time.process_time()
                        ok, errors, secs, lat = asyncio.run(
                            throughput(server.mcp_url, token, clients, args.duration, texts, tag))
                        tps.append((clients, ok, errors, secs, lat, (total_cpu(pid) - cpu_server) / secs,
                                    (time.process_time() - cpu_client) / secs))
                        print(f"[{time.strftime('%H:%M:%S')}]   {workers} worker(s), {clients} clients: "
                              f"{ok / secs:.0f} calls/s, {errors} errors", file=sys.stderr, flush=True)
                    rss = total_rss(pid)
                    started = server.started_in or 0.0
                runs.append((size, added, seed_s, started, load_before, seq, tps, rss, loadavg(), workers))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"Log: {'PostgreSQL' if args.database_url else 'SQLite'}. Host: {os.cpu_count()} CPUs, shared (load average before each size's calls in the table); "
          f"embedder threads={embedder.threads}; vocabulary {args.vocabulary}. Seeding: "
          + ("every text embedded." if args.exact_seed else
             "distinct corpus texts embedded once, '<text> (#i)' reuses the vector of '<text>' "
             f"({len(texts):,} distinct texts, mean {sum(map(len, texts)) / len(texts):.0f} chars)."))
    print(f"Sequential: {args.samples} timed calls per tool after 10 warm-up pairs, one MCP client "
          "(2026-07-28 stateless mode), store and retrieve alternating; memories grow by the stores.")
    print()
    print("| memories | workers | load avg | store p50 | store p95 | store p99 | retrieve p50 | retrieve p95 | "
          "retrieve p99 |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for size, _, _, _, load, seq, _, _, _, workers in runs:
        s, r = percentiles(seq["store_memory"]), percentiles(seq["retrieve_context"])
        print(f"| {size:,} | {workers} | {load} | {s[0]:.1f} ms | {s[1]:.1f} ms | {s[2]:.1f} ms | "
              f"{r[0]:.1f} ms | {r[1]:.1f} ms | {r[2]:.1f} ms |")
    print()
    print(f"Throughput: C concurrent clients, each alternating store_memory / retrieve_context for "
          f"{args.duration:g} s. CPU = cores' worth used by the server / by this client process.")
    print()
    print("| memories | workers | clients | calls/s | errors | call p50 | call p95 | server CPU | client CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, _, _, _, _, _, tps, _, _, workers in runs:
        for clients, ok, errors, secs, lat, cpu_s, cpu_c in tps:
            p = percentiles(lat) if len(lat) > 2 else (float("nan"),) * 3
            print(f"| {size:,} | {workers} | {clients} | {ok / secs:.0f} | {errors} | {p[0]:.0f} ms | {p[1]:.0f} ms | "
                  f"{cpu_s:.2f} | {cpu_c:.2f} |")
    print()
    print("| memories | workers | seeded now | seed time | /healthz after start | server VmRSS | server VmHWM (peak) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size, added, seed_s, started, _, _, _, rss, _, workers in runs:
        print(f"| {size:,} | {workers} | {added:,} | {seed_s:.1f} s | {started:.2f} s | "
              f"{rss.get('VmRSS', 0) / 1024:.0f} MB | "
              f"{rss.get('VmHWM', 0) / 1024:.0f} MB |")
    print()
    print("| target | measured | |")
    print("|---|---|---|")
    # Latency and RSS targets are per process: judged on the first worker count given.
    by_size = {r[0]: r for r in runs if r[9] == args.workers[0]}
    for size, run in by_size.items():
        s = percentiles(run[5]["store_memory"])
        print(f"| store_memory p50 <= 10 ms ({size:,}) | {s[0]:.1f} ms | {mark(s[0] <= 10)} |")
    if 10000 in by_size:
        r = percentiles(by_size[10000][5]["retrieve_context"])
        print(f"| retrieve_context p50 <= 10 ms at 10k | {r[0]:.1f} ms | {mark(r[0] <= 10)} |")
        print(f"| retrieve_context p95 <= 25 ms at 10k | {r[1]:.1f} ms | {mark(r[1] <= 25)} |")
    if 100000 in by_size:
        r = percentiles(by_size[100000][5]["retrieve_context"])
        print(f"| retrieve_context p50 <= 25 ms at 100k | {r[0]:.1f} ms | {mark(r[0] <= 25)} |")
        rss = by_size[100000][7].get("VmRSS", 0) / 1024
        print(f"| server RSS <= 400 MB at 100k | {rss:.0f} MB | {mark(rss <= 400)} |")
    at16: dict[tuple[int, int], float] = {}
    for run in runs:
        size, workers = run[0], run[9]
        for clients, ok, errors, secs, *_ in run[6]:
            if clients == 16:
                at16[size, workers] = ok / secs
                print(f"| >= 200 calls/s with 16 clients ({size:,}, {workers} worker(s)) | {ok / secs:.0f} calls/s, "
                      f"{errors} errors | {mark(ok / secs >= 200 and errors == 0)} |")
    for (size, workers), rate in at16.items():
        if workers == 2 and (size, 1) in at16:
            ratio = rate / at16[size, 1]
            print(f"| 2 workers >= 1.5x one at 16 clients ({size:,}) | {ratio:.2f}x | {mark(ratio >= 1.5)} |")


if __name__ == "__main__":
    main()
