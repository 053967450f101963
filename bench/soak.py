"""A bounded soak: many clients calling a real `memory serve` on loopback for a while, then stop.

    .venv/bin/python bench/soak.py [--clients 32] [--seconds 120] [--users 4] [--json soak.json]

Each client is the MCP SDK's own client (2026-07-28 mode) for one of a few people (eight clients
per person by default, so one person's calls also queue on their lock), and loops
over a mix of store_memory (30%), retrieve_context (40%) and search (30%). Prints one table row
per tool (calls, errors, p50/p95/p99) and the server's RSS at the end of the warm-up (the first
20% of the run) and at the end; --json writes the same numbers to a file. `--seconds` defaults
to $MEMORY_SOAK_SECONDS, or 120. The RSS that grows after the warm-up is mostly each person's
SQLite page caches filling (three connections a person, up to 2 MB each) and the memories stored:
it levels off, and grows with the number of people, not with time.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from memory.server.process import ServerProcess

WARM_UP = 0.2
MIX = [("store_memory", 0.3), ("retrieve_context", 0.4), ("search", 0.3)]
TOPICS = ["deploy pipeline", "coffee order", "quarterly report", "dentist appointment", "bike repair",
          "holiday plans", "database migration", "birthday present", "garden watering", "tax return"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def arguments(tool: str, rng: random.Random, client: int, n: int) -> dict:
    topic = rng.choice(TOPICS)
    if tool == "store_memory":
        return {"text": f"Client {client} note {n} about the {topic}: {rng.choice(TOPICS)} comes next",
                "tags": [topic.split()[0]]}
    if tool == "retrieve_context":
        return {"query": f"what about the {topic}?", "limit": 10}
    return {"query": topic}


async def client_loop(url: str, token: str, client: int, stop_at: float, timings: dict, errors: dict) -> None:
    rng = random.Random(client)
    tools, weights = zip(*MIX)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        async with Client(streamable_http_client(url, http_client=http)) as session:
            n = 0
            while time.monotonic() < stop_at:
                tool = rng.choices(tools, weights)[0]
                began = time.perf_counter()
                try:
                    result = await session.call_tool(tool, arguments(tool, rng, client, n))
                    failed = result.is_error and " ".join(getattr(c, "text", "") for c in result.content)
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    failed = f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - began) * 1000
                if failed:
                    errors[tool].append(str(failed)[:200])
                else:
                    timings[tool].append(elapsed)
                n += 1


async def drive(server: ServerProcess, clients: int, users: int, seconds: float) -> dict:
    tokens = [server.token(f"soak-{i}", ttl_seconds=int(seconds) + 600) for i in range(users)]
    timings = {tool: [] for tool, _ in MIX}
    errors = {tool: [] for tool, _ in MIX}
    began = time.monotonic()
    stop_at = began + seconds
    rss: list[tuple[float, float]] = []

    async def sample_rss() -> None:
        while time.monotonic() < stop_at:
            rss.append((time.monotonic() - began, rss_mb(server.pid)))
            await asyncio.sleep(1)

    await asyncio.gather(sample_rss(), *(
        client_loop(server.mcp_url, tokens[c % users], c, stop_at, timings, errors) for c in range(clients)))
    rss.append((time.monotonic() - began, rss_mb(server.pid)))
    warm = [mb for at, mb in rss if at <= seconds * WARM_UP] or [rss[0][1]]
    return {"clients": clients, "users": users, "seconds": seconds, "timings": timings, "errors": errors,
            "rss_after_warm_up_mb": warm[-1], "rss_end_mb": rss[-1][1], "rss_max_mb": max(mb for _, mb in rss),
            "rss_mb_by_second": [(round(at, 1), round(mb, 1)) for at, mb in rss]}


def summary(run: dict) -> dict:
    operations = {}
    for tool, samples in run["timings"].items():
        q = statistics.quantiles(samples, n=100) if len(samples) >= 2 else [float("nan")] * 99
        operations[tool] = {"calls": len(samples) + len(run["errors"][tool]), "errors": len(run["errors"][tool]),
                            "p50_ms": statistics.median(samples) if samples else None, "p95_ms": q[94],
                            "p99_ms": q[98], "first_errors": run["errors"][tool][:3]}
    growth = run["rss_end_mb"] / run["rss_after_warm_up_mb"] - 1
    return {key: run[key] for key in ("clients", "users", "seconds", "rss_after_warm_up_mb", "rss_end_mb",
                                       "rss_max_mb", "rss_mb_by_second")} | {"rss_growth": growth,
                                                                              "operations": operations}


def print_table(result: dict) -> None:
    total = sum(op["calls"] for op in result["operations"].values())
    print(f"{result['clients']} clients ({result['users']} people), {result['seconds']:.0f} s, "
          f"{total:,} calls ({total / result['seconds']:.0f}/s)")
    print()
    print("| tool | calls | errors | p50 | p95 | p99 |")
    print("|---|---:|---:|---:|---:|---:|")
    for tool, op in result["operations"].items():
        print(f"| {tool} | {op['calls']:,} | {op['errors']} | {op['p50_ms']:.1f} ms | {op['p95_ms']:.1f} ms "
              f"| {op['p99_ms']:.1f} ms |")
    print()
    print(f"server RSS: {result['rss_after_warm_up_mb']:.0f} MB after warm-up, {result['rss_end_mb']:.0f} MB at "
          f"the end ({result['rss_growth']:+.1%}), {result['rss_max_mb']:.0f} MB at most")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("MEMORY_SOAK_SECONDS", 120)))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with ServerProcess(Path(tmp) / "data") as server:
            server.wait_ready()
            result = summary(asyncio.run(drive(server, args.clients, args.users, args.seconds)))
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
