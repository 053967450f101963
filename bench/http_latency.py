"""Latency of MCP tool calls over HTTP: a real `memory serve` on loopback, the SDK's own client.

    .venv/bin/python bench/http_latency.py [--memories 1000] [--samples 200] [--modes auto legacy raw]

Seeds N memories through the service (batched, as bench/core_latency.py does), starts the
server on that data directory, then times `store_memory` and `retrieve_context` calls one after
another, end to end (client encode, HTTP, auth, worker thread, service, response), in each
protocol mode: "auto" speaks 2026-07-28 (one stateless POST per call), "legacy" the
initialize-handshake session of 2025-11-25, and "raw" the same POST as "auto" built by hand
(httpx alone): what is left is the server's share.
"""

import argparse
import asyncio
import itertools
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
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


# What the SDK's client sends with each 2026-07-28 call, so the raw mode asks the server for the same work.
_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
         "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0.1.0"},
         "io.modelcontextprotocol/clientCapabilities": {}}


async def measure(url: str, token: str, mode: str, samples: int, texts: list[str], *,
                  tag: str | None = None, warmup: int = 5) -> dict[str, list[float]]:
    """Sequential store_memory and retrieve_context calls; the first `warmup` of each are not timed.

    "raw" sends each call as one JSON-RPC POST built here (the 2026-07-28 protocol, as the SDK's
    client sends it) and parses its JSON answer: the server's share of a call without the Python
    SDK client's own CPU (about 5 ms a call, on the same two cores)."""
    if mode == "raw":
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28",
                   "Mcp-Method": "tools/call"}
        ids = itertools.count(1)
        async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
            async def post(tool: str, arguments: dict) -> None:
                body = {"jsonrpc": "2.0", "id": next(ids), "method": "tools/call",
                        "params": {"name": tool, "arguments": arguments, "_meta": _META}}
                response = await http.post(url, json=body, headers={"Mcp-Name": tool})
                answer = response.json()
                if response.status_code != 200 or "error" in answer or answer["result"].get("isError"):
                    raise RuntimeError(f"{tool} failed: {response.status_code} {response.text[:300]}")

            return await _timed(post, samples, texts, tag or mode, warmup)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            async def call(tool: str, arguments: dict) -> None:
                result = await client.call_tool(tool, arguments)
                if result.is_error:
                    raise RuntimeError(f"{tool} failed: {result.content}")

            return await _timed(call, samples, texts, tag or mode, warmup)


async def _timed(call: Callable[[str, dict], Awaitable[None]], samples: int, texts: list[str], tag: str,
                 warmup: int) -> dict[str, list[float]]:
    rng = random.Random(3)
    timings: dict[str, list[float]] = {"store_memory": [], "retrieve_context": []}
    for i in range(samples + warmup):  # the first few warm connections and caches up
        calls = {
            "store_memory": {"text": f"{rng.choice(texts)} [{tag} {i}]"},
            "retrieve_context": {"query": rng.choice(texts)[:120], "limit": 10},
        }
        for tool, arguments in calls.items():
            began = time.perf_counter()
            await call(tool, arguments)
            if i >= warmup:
                timings[tool].append((time.perf_counter() - began) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=1000, help="memories seeded before measuring")
    parser.add_argument("--samples", type=int, default=200, help="timed calls per tool and mode")
    parser.add_argument("--modes", nargs="+", default=["auto", "legacy", "raw"], choices=["auto", "legacy", "raw"])
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
    protocol = {"auto": "2026-07-28", "legacy": "2025-11-25", "raw": "2026-07-28, no SDK client"}
    for mode, timings in rows:
        for tool, samples in timings.items():
            p50, p95, p99 = percentiles(samples)
            print(f"| {mode} ({protocol[mode]}) | {tool} | {p50:.1f} ms | {p95:.1f} ms | {p99:.1f} ms |")


if __name__ == "__main__":
    main()
