"""Latency of MCP tool calls over HTTP: a real `memory serve` on loopback, the SDK's own client.

    .venv/bin/python bench/http_latency.py [--memories 1000] [--samples 200] [--modes auto legacy]

Seeds N memories through the service (batched, as bench/core_latency.py does), starts the
server on that data directory, then times `store_memory` and `retrieve_context` calls one after
another, end to end (client encode, HTTP, auth, worker thread, service, response), in each
protocol mode: "auto" speaks 2026-07-28 (one stateless POST per call), "legacy" the
initialize-handshake session of 2025-11-25.
"""

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import httpx2
from core_latency import corpus, percentiles, seed
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from memory.identity import Identity
from memory.server.process import ServerProcess
from memory.service import Caller, MemoryService
from projections.embedder import default_embedder

USER = "bench"


def seed_memories(data_dir: Path, count: int, texts: list[str]) -> float:
    began = time.perf_counter()
    embedder = default_embedder()
    service = MemoryService(data_dir, embedder)
    try:
        seed(service, Caller(Identity("local", USER), client_id="bench"), texts, count)
    finally:
        service.close()
    return time.perf_counter() - began


async def measure(url: str, token: str, mode: str, samples: int, texts: list[str], *,
                  tag: str | None = None, warmup: int = 5) -> dict[str, list[float]]:
    """Sequential store_memory and retrieve_context calls; the first `warmup` of each are not timed."""
    rng = random.Random(3)
    timings: dict[str, list[float]] = {"store_memory": [], "retrieve_context": []}
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            for i in range(samples + warmup):  # the first few warm connections and caches up
                calls = {
                    "store_memory": {"text": f"{rng.choice(texts)} [{tag or mode} {i}]"},
                    "retrieve_context": {"query": rng.choice(texts)[:120], "limit": 10},
                }
                for tool, arguments in calls.items():
                    began = time.perf_counter()
                    result = await client.call_tool(tool, arguments)
                    elapsed = (time.perf_counter() - began) * 1000
                    if result.is_error:
                        raise RuntimeError(f"{tool} failed: {result.content}")
                    if i >= warmup:
                        timings[tool].append(elapsed)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=1000, help="memories seeded before measuring")
    parser.add_argument("--samples", type=int, default=200, help="timed calls per tool and mode")
    parser.add_argument("--modes", nargs="+", default=["auto", "legacy"], choices=["auto", "legacy"])
    args = parser.parse_args()
    texts = corpus()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        seed_s = seed_memories(data_dir, args.memories, texts)
        with ServerProcess(data_dir) as server:
            server.wait_ready()
            token = server.token(USER)
            rows = [(mode, asyncio.run(measure(server.mcp_url, token, mode, args.samples, texts)))
                    for mode in args.modes]
            started = server.started_in or 0.0
    print(f"{args.memories:,} memories seeded in {seed_s:.1f} s; server answered /healthz "
          f"{started:.2f} s after start; {args.samples} sequential calls per row")
    print()
    print("| mode (protocol) | tool | p50 | p95 | p99 |")
    print("|---|---|---:|---:|---:|")
    protocol = {"auto": "2026-07-28", "legacy": "2025-11-25"}
    for mode, timings in rows:
        for tool, samples in timings.items():
            p50, p95, p99 = percentiles(samples)
            print(f"| {mode} ({protocol[mode]}) | {tool} | {p50:.1f} ms | {p95:.1f} ms | {p99:.1f} ms |")


if __name__ == "__main__":
    main()
