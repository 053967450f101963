"""The log in PostgreSQL vs SQLite, in process (no HTTP): per-call latency at N memories, and the
time a cold replica (an empty data dir) takes to serve a person whose log has N events.

    .venv/bin/python bench/log_backends.py --database-url postgresql://.../EMPTY_DB [--memories 10000]
                                           [--samples 200]

One MemoryService per backend over the same seeded memories (seeded as bench/latency.py seeds them:
each distinct corpus text embedded once). The timed calls alternate between the two services, call
by call, so a busy shared machine slows both alike; the difference of the medians is the
backend's cost. Target: retrieve_context p50 on PostgreSQL within +3 ms of SQLite.

Cold replica: a new MemoryService on an empty data dir over the same database answers its first
retrieve_context; its projections are rebuilt from PostgreSQL. "Cached embeddings": its embedder
returns the vectors already made for these texts (as a shared embedding cache would), so the time
is the replay, not the model. The same for SQLite with the projections file deleted.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_latency import corpus, percentiles  # noqa: E402
from latency import USER, ReusingEmbedder, seed_to  # noqa: E402

from memory.commands import RetrieveQuery, StoreMemory  # noqa: E402
from memory.identity import Identity  # noqa: E402
from memory.logs import open_log_directory  # noqa: E402
from memory.service import Caller, MemoryService  # noqa: E402
from memory.signing import KeyRing  # noqa: E402
from projections.embedder import default_embedder  # noqa: E402

CALLER = Caller(Identity("local", USER), client_id="bench")


def service(data_dir: Path, embedder, database_url: str | None, keys_dir: Path) -> MemoryService:
    keys = KeyRing(data_dir, keys_dir=keys_dir)
    return MemoryService(data_dir, embedder, logs=open_log_directory(data_dir, keys, database_url))


def cold_first_retrieve(data_dir: Path, embedder, database_url: str | None, keys_dir: Path) -> float:
    began = time.perf_counter()
    svc = service(data_dir, embedder, database_url, keys_dir)
    try:
        svc.retrieve_context(CALLER, RetrieveQuery(query="what did we decide about the garden?"))
        return time.perf_counter() - began
    finally:
        svc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, metavar="URL", help="an empty PostgreSQL database")
    parser.add_argument("--memories", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    texts = corpus()
    embedder = default_embedder()
    reusing = ReusingEmbedder(embedder)
    rng = random.Random(3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    try:
        keys_dir = tmp / "keys"
        KeyRing(tmp, keys_dir=keys_dir)
        dirs = {"sqlite": tmp / "sqlite", "postgres": tmp / "postgres"}
        urls = {"sqlite": None, "postgres": args.database_url}
        for name, data_dir in dirs.items():
            shutil.copytree(keys_dir, data_dir / "keys")  # one key ring, as replicas share one
            added, seconds = seed_to(data_dir, args.memories, texts, False, reusing, urls[name])
            print(f"seeded {added:,} memories on {name} in {seconds:.1f} s", file=sys.stderr, flush=True)
        # The reusing embedder remembers every vector it made: the cold replicas below find them all.
        services = {name: service(dirs[name], reusing, urls[name], keys_dir) for name in dirs}
        timings: dict[tuple[str, str], list[float]] = {}
        try:
            for i in range(args.samples):
                query = rng.choice(texts)[:120]
                text = f"{rng.choice(texts)} [bench {i}]"
                order = list(services) if i % 2 == 0 else list(reversed(services))
                for name in order:
                    began = time.perf_counter()
                    services[name].retrieve_context(CALLER, RetrieveQuery(query=query))
                    timings.setdefault((name, "retrieve"), []).append((time.perf_counter() - began) * 1000)
                    began = time.perf_counter()
                    services[name].store(CALLER, StoreMemory(text=text))
                    timings.setdefault((name, "store"), []).append((time.perf_counter() - began) * 1000)
        finally:
            for svc in services.values():
                svc.close()

        cold = {}
        for name in dirs:
            replica = tmp / f"cold-{name}"
            if name == "sqlite":  # the same log file, its projections gone
                shutil.copytree(dirs[name], replica)
                for path in replica.glob("users/*/projections.sqlite*"):
                    path.unlink()
            cold[name] = cold_first_retrieve(replica, reusing, urls[name], keys_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{args.memories:,} memories seeded (+{args.samples} stored while measuring), {args.samples} calls per "
          "tool and backend, alternating call by call; in process, no HTTP; a shared 2-core host.")
    print()
    print("| call | SQLite p50 | PostgreSQL p50 | difference | SQLite p95 | PostgreSQL p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for tool in ("retrieve", "store"):
        s, p = percentiles(timings[("sqlite", tool)]), percentiles(timings[("postgres", tool)])
        print(f"| {tool} | {s[0]:.1f} ms | {p[0]:.1f} ms | {p[0] - s[0]:+.1f} ms | {s[1]:.1f} ms | {p[1]:.1f} ms |")
    diff = percentiles(timings[("postgres", "retrieve")])[0] - percentiles(timings[("sqlite", "retrieve")])[0]
    print()
    print(f"target retrieve p50 within +3 ms: {'met' if diff <= 3 else '**missed**'} ({diff:+.1f} ms)")
    print()
    print("| cold replica, first retrieve_context (cached embeddings) | SQLite (projections deleted) | PostgreSQL (empty data dir) |")
    print("|---|---:|---:|")
    print(f"| {args.memories + args.samples:,} memories | {cold['sqlite']:.1f} s | {cold['postgres']:.1f} s |")


if __name__ == "__main__":
    main()
