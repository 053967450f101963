"""End-to-end latency, throughput and memory of a real `memory serve` as the log of one user grows.

    .venv/bin/python bench/latency.py [--sizes 1000 10000 100000] [--samples 200]
                                      [--concurrency 1 8 16 32] [--duration 10]
                                      [--data-dir DIR] [--exact-seed] [--vocabulary small] [--database-url URL]
                                      [--workers 1 2 | --replicas 1 3]

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

`--replicas 1 3` (instead of --workers) serves each size with N `memory serve` replicas over one
PostgreSQL database behind haproxy, round robin (bench/replica_set.py: the replica tests' own
tests/load_balancer.py), each with its own data dir and port, all with one key ring. Without
`--database-url` a throwaway PostgreSQL is started for the run as the tests start theirs
(tests/postgres_server.py). Before timing, each replica answers calls on its own address (a cold
one rebuilds the person's projections from the log, with the vectors of the shared embedding
cache); CPU and RSS are then summed over the replicas, and haproxy's CPU is shown apart.

Each run (a size and a worker or replica count) stores texts of its own, so a repeated count
(`--workers 1 2 1 2`) never stores another run's text again: that would be a duplicate, answered
from the embedding cache without the model. The last table puts the runs side by side at the
highest concurrency given.

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
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx2
import numpy as np
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_latency import corpus, percentiles  # noqa: E402
from http_latency import measure  # noqa: E402
from replica_set import ReplicaSet, postgres_database  # noqa: E402

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
                     warmup: int = 10, client: str = "sdk") -> dict[str, list[float]]:
    return await measure(url, token, "auto" if client == "sdk" else "raw", samples, texts, tag=tag, warmup=warmup)


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


async def warm_replicas(urls: list[str], token: str) -> list[float]:
    """A context question and a retrieve on each replica's own address, past the balancer: a replica
    opens the person's projections at its first call (a cold one rebuilds them from the log, with
    the embeddings the shared cache holds). Seconds each replica took."""
    took = []
    for url in urls:
        began = time.perf_counter()
        http, client = _client(url, token)
        async with http, client:
            for tool, arguments in (("get_context_info", {}), ("retrieve_context", {"query": "warm up"})):
                result = await client.call_tool(tool, arguments)
                if result.is_error:
                    raise RuntimeError(f"warming {url}: {tool} failed: {result.content}")
        took.append(time.perf_counter() - began)
    return took


@dataclass
class Deployment:
    """What the timing needs of whatever answers the calls: one `memory serve` (and its workers)
    or replicas behind a balancer."""

    mcp_url: str
    token: str
    pids: list[int]  # each server's top process; its children (workers) count with it
    balancer_pid: int | None
    started_in: float

    def server_cpu(self) -> float:
        return sum(total_cpu(pid) for pid in self.pids)

    def balancer_cpu(self) -> float:
        return proc_cpu(self.balancer_pid) if self.balancer_pid is not None else 0.0

    def rss(self) -> dict[str, int]:
        summed = {"VmRSS": 0, "VmHWM": 0}
        for pid in self.pids:
            for key, value in total_rss(pid).items():
                summed[key] += value
        return summed


_SERVE_ARGS = ["--call-rate-limit", "1000000"]


@contextmanager
def one_server(data_dir: Path, workers: int, database_url: str | None, tag: str) -> Iterator[Deployment]:
    # The URL as the environment, not --database-url: ServerProcess.token registers the bench's
    # token in the database the server checks tokens against only when it sees MEMORY_DATABASE_URL.
    env = {"MEMORY_DATABASE_URL": database_url} if database_url else None
    with ServerProcess(data_dir, log_file=data_dir.parent / f"server-{tag}.log", env=env,
                       extra_args=[*_SERVE_ARGS, "--workers", str(workers)]) as server:
        server.wait_ready(timeout=300)
        token = server.token(USER)
        if workers > 1:
            asyncio.run(warm_workers(server.mcp_url, token, workers))
        yield Deployment(server.mcp_url, token, [server.pid], None, server.started_in or 0.0)


@contextmanager
def replicas_behind_balancer(data_dir: Path, replicas: int, database_url: str, tag: str) -> Iterator[Deployment]:
    with ReplicaSet(data_dir, replicas, database_url, _SERVE_ARGS, data_dir.parent, tag) as replica_set:
        token = replica_set.token(USER)
        took = asyncio.run(warm_replicas(replica_set.direct_mcp_urls(), token))
        print(f"[{time.strftime('%H:%M:%S')}]   {replicas} replica(s) warm: first calls took "
              + ", ".join(f"{t:.1f} s" for t in took), file=sys.stderr, flush=True)
        yield Deployment(replica_set.mcp_url, token, replica_set.pids, replica_set.balancer.pid,
                         replica_set.started_in)


@dataclass
class Rate:
    """One concurrency level's window; CPU in cores' worth over it."""

    clients: int
    ok: int
    errors: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    balancer_cpu: float
    client_cpu: float

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds


@dataclass
class Run:
    """One size served by one setup (a worker or replica count)."""

    size: int
    count: int
    added: int
    seed_seconds: float
    started_in: float
    load: str
    sequential: dict[str, list[float]]
    rates: list[Rate]
    rss: dict[str, int]


def time_calls(deployment: Deployment, args: argparse.Namespace, texts: list[str], tag: str,
               setup: str) -> tuple[str, dict[str, list[float]], list[Rate]]:
    """Sequential calls, then each concurrency level; (load average before, sequential, rates)."""
    load_before = loadavg()
    seq = asyncio.run(sequential(deployment.mcp_url, deployment.token, args.samples, texts, tag, client=args.client))
    rates = []
    for clients in args.concurrency:
        server, balancer, client = deployment.server_cpu(), deployment.balancer_cpu(), time.process_time()
        ok, errors, secs, lat = asyncio.run(
            throughput(deployment.mcp_url, deployment.token, clients, args.duration, texts, tag))
        rates.append(Rate(clients, ok, errors, secs, lat, (deployment.server_cpu() - server) / secs,
                          (deployment.balancer_cpu() - balancer) / secs, (time.process_time() - client) / secs))
        print(f"[{time.strftime('%H:%M:%S')}]   {setup}, {clients} clients: "
              f"{ok / secs:.0f} calls/s, {errors} errors", file=sys.stderr, flush=True)
    return load_before, seq, rates


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
    parser.add_argument("--client", choices=["sdk", "raw"], default="sdk",
                        help="sequential calls by the MCP SDK's client, or as hand-built JSON-RPC POSTs (the "
                             "server's share, without the Python client's ~5 ms of CPU a call)")
    parser.add_argument("--database-url", metavar="URL", help="keep the log in this PostgreSQL database")
    setups = parser.add_mutually_exclusive_group()
    setups.add_argument("--workers", type=int, nargs="+", default=[1], help="worker processes to compare (--workers)")
    setups.add_argument("--replicas", type=int, nargs="+",
                        help="replica counts to compare, behind haproxy over one PostgreSQL database")
    args = parser.parse_args()
    if args.replicas and args.data_dir and not args.database_url:
        parser.error("--replicas --data-dir needs the --database-url its log is in (a started PostgreSQL is empty)")
    label, counts = ("replicas", args.replicas) if args.replicas else ("workers", args.workers)

    texts = corpus(args.vocabulary)
    embedder = default_embedder()
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="bench-latency-")
        data_dir = Path(tmp) / "data"
    else:
        data_dir = args.data_dir
    runs: list[Run] = []
    database = postgres_database(args.database_url) if args.replicas else nullcontext(args.database_url)
    try:
        with database as database_url:
            for size in sorted(args.sizes):
                added, seed_s = seed_to(data_dir, size, texts, args.exact_seed, embedder, database_url)
                print(f"[{time.strftime('%H:%M:%S')}] size {size:,}: seeded {added:,} in {seed_s:.1f} s; "
                      f"load {loadavg()}", file=sys.stderr, flush=True)
                for index, count in enumerate(counts):
                    # The run's place in the tag: a repeated count (1 2 1 2) stores texts of its own,
                    # never another run's (a repeat would be a duplicate, answered without the model).
                    tag = f"{size}{label[0]}{count}-{index}"
                    deploy = (replicas_behind_balancer(data_dir, count, database_url, tag) if args.replicas
                              else one_server(data_dir, count, database_url, tag))
                    with deploy as deployment:
                        load, seq, rates = time_calls(deployment, args, texts, tag, f"{count} {label[:-1]}(s)")
                        runs.append(Run(size, count, added, seed_s, deployment.started_in, load, seq, rates,
                                        deployment.rss()))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    report(runs, args, label, embedder.threads, texts)


def report(runs: list[Run], args: argparse.Namespace, label: str, threads: int, texts: list[str]) -> None:
    log = "PostgreSQL" if args.database_url or args.replicas else "SQLite"
    print(f"Log: {log}. Host: {os.cpu_count()} CPUs, shared (load average before each run's calls in the table); "
          f"embedder threads={threads}; vocabulary {args.vocabulary}. Seeding: "
          + ("every text embedded." if args.exact_seed else
             "distinct corpus texts embedded once, '<text> (#i)' reuses the vector of '<text>' "
             f"({len(texts):,} distinct texts, mean {sum(map(len, texts)) / len(texts):.0f} chars)."))
    if args.replicas:
        print("Replicas: each `memory serve` with its own data dir and port, one key ring, one PostgreSQL "
              "database, behind haproxy (round robin, tests/load_balancer.py); every replica warmed first.")
    who = ("one MCP client (the SDK's, 2026-07-28 stateless mode)" if args.client == "sdk" else
           "hand-built 2026-07-28 JSON-RPC POSTs (httpx alone, no SDK client)")
    print(f"Sequential: {args.samples} timed calls per tool after 10 warm-up pairs, {who}, "
          "store and retrieve alternating; memories grow by the stores.")
    print()
    print(f"| memories | {label} | load avg | store p50 | store p95 | store p99 | retrieve p50 | retrieve p95 | "
          "retrieve p99 |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        s, r = percentiles(run.sequential["store_memory"]), percentiles(run.sequential["retrieve_context"])
        print(f"| {run.size:,} | {run.count} | {run.load} | {s[0]:.1f} ms | {s[1]:.1f} ms | {s[2]:.1f} ms | "
              f"{r[0]:.1f} ms | {r[1]:.1f} ms | {r[2]:.1f} ms |")
    print()
    balancer = " / by haproxy" if args.replicas else ""
    print(f"Throughput: C concurrent clients, each alternating store_memory / retrieve_context for "
          f"{args.duration:g} s. CPU = cores' worth used by the server processes{balancer} / by this client process.")
    print()
    haproxy = (" haproxy CPU |", "---:|") if args.replicas else ("", "")
    print(f"| memories | {label} | clients | calls/s | errors | call p50 | call p95 | server CPU |{haproxy[0]} client CPU |")
    print(f"|---:|---:|---:|---:|---:|---:|---:|---:|{haproxy[1]}---:|")
    for run in runs:
        for rate in run.rates:
            p = percentiles(rate.latencies) if len(rate.latencies) > 2 else (float("nan"),) * 3
            balancer_cpu = f" {rate.balancer_cpu:.2f} |" if args.replicas else ""
            print(f"| {run.size:,} | {run.count} | {rate.clients} | {rate.per_second:.0f} | {rate.errors} | "
                  f"{p[0]:.0f} ms | {p[1]:.0f} ms | {rate.server_cpu:.2f} |{balancer_cpu} {rate.client_cpu:.2f} |")
    print()
    ready = "every replica ready after start" if args.replicas else "/healthz after start"
    print(f"| memories | {label} | seeded now | seed time | {ready} | server VmRSS | server VmHWM (peak) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run.size:,} | {run.count} | {run.added:,} | {run.seed_seconds:.1f} s | {run.started_in:.2f} s | "
              f"{run.rss.get('VmRSS', 0) / 1024:.0f} MB | {run.rss.get('VmHWM', 0) / 1024:.0f} MB |")
    print()
    summary(runs, args, label)
    print()
    targets(runs, args)


def summary(runs: list[Run], args: argparse.Namespace, label: str) -> None:
    """One row per run at the highest concurrency: the setups side by side (CPU and RSS summed over
    the server processes; haproxy's apart)."""
    clients = max(args.concurrency)
    haproxy = (" haproxy CPU |", "---:|") if args.replicas else ("", "")
    print(f"| memories | {label} | load avg | store p50 | retrieve p50 | {clients} clients | server CPU |{haproxy[0]} "
          "client CPU | server RSS |")
    print(f"|---:|---:|---|---:|---:|---:|---:|{haproxy[1]}---:|---:|")
    for run in runs:
        rate = next(r for r in run.rates if r.clients == clients)
        s, r = percentiles(run.sequential["store_memory"]), percentiles(run.sequential["retrieve_context"])
        balancer_cpu = f" {rate.balancer_cpu:.2f} |" if args.replicas else ""
        print(f"| {run.size:,} | {run.count} | {run.load} | {s[0]:.1f} ms | {r[0]:.1f} ms | "
              f"{rate.per_second:.0f} calls/s | {rate.server_cpu:.2f} |{balancer_cpu} {rate.client_cpu:.2f} | "
              f"{run.rss.get('VmRSS', 0) / 1024:.0f} MB |")


def targets(runs: list[Run], args: argparse.Namespace) -> None:
    print("| target | measured | |")
    print("|---|---|---|")
    # Latency and RSS targets are per process: judged on the first count given (one server's).
    first = (args.replicas or args.workers)[0]
    by_size = {run.size: run for run in runs if run.count == first}
    for size, run in by_size.items():
        s = percentiles(run.sequential["store_memory"])
        print(f"| store_memory p50 <= 10 ms ({size:,}) | {s[0]:.1f} ms | {mark(s[0] <= 10)} |")
    if 10000 in by_size:
        r = percentiles(by_size[10000].sequential["retrieve_context"])
        print(f"| retrieve_context p50 <= 10 ms at 10k | {r[0]:.1f} ms | {mark(r[0] <= 10)} |")
        print(f"| retrieve_context p95 <= 25 ms at 10k | {r[1]:.1f} ms | {mark(r[1] <= 25)} |")
    if 100000 in by_size:
        r = percentiles(by_size[100000].sequential["retrieve_context"])
        print(f"| retrieve_context p50 <= 25 ms at 100k | {r[0]:.1f} ms | {mark(r[0] <= 25)} |")
        rss = by_size[100000].rss.get("VmRSS", 0) / 1024
        print(f"| server RSS <= 400 MB at 100k | {rss:.0f} MB | {mark(rss <= 400)} |")
    unit = "replica(s)" if args.replicas else "worker(s)"
    at16: dict[tuple[int, int], list[float]] = {}
    for run in runs:
        for rate in run.rates:
            if rate.clients == 16:
                at16.setdefault((run.size, run.count), []).append(rate.per_second)
                print(f"| >= 200 calls/s with 16 clients ({run.size:,}, {run.count} {unit}) | "
                      f"{rate.per_second:.0f} calls/s, {rate.errors} errors | "
                      f"{mark(rate.per_second >= 200 and rate.errors == 0)} |")
    if not args.replicas:
        # Replicas have no target here: on a small host they share its cores (see docs/scale-out.md).
        for (size, workers), rates in at16.items():
            if workers == 2 and (size, 1) in at16:
                ratio = (sum(rates) / len(rates)) / (sum(at16[size, 1]) / len(at16[size, 1]))
                print(f"| 2 workers >= 1.5x one at 16 clients ({size:,}) | {ratio:.2f}x | {mark(ratio >= 1.5)} |")


if __name__ == "__main__":
    main()
