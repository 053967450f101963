"""In-process latency of the service (no HTTP): store and retrieve_context at growing log sizes,
and the replay rate of a full projection rebuild, with the embedding cache warm and cold.

    .venv/bin/python bench/core_latency.py [--sizes 1000 10000] [--samples 200]

Memories are seeded in batches straight through the log (one embedding batch per 256), then
each measured call goes through MemoryService exactly as a tool call would.
"""

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from memory.commands import RetrieveQuery, StoreMemory
from memory.events import MemoryStored
from memory.identity import Identity
from memory.ids import new_uuid7
from memory.log import EventDraft
from memory.model import MemoryType, Scope
from memory.service import Caller, MemoryService
from projections.embedder import default_embedder

# $LOCOMO_JSON points elsewhere (a git worktree has no ../shared beside it).
_LOCOMO = Path(os.environ.get("LOCOMO_JSON") or
               Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo-dev.json")
_WORDS = ("garden project deadline coffee budget meeting python release design review travel "
          "doctor family music invoice server backup launch marketing hiring roadmap").split()


def corpus(vocabulary: str = "realistic") -> list[str]:
    """Real conversational text when the measuring data is beside the repo, else synthetic.

    `vocabulary="small"`: 3,000 texts of 12 words drawn from 20, so every word is in thousands of
    memories (about 45% of them): the case where BM25 has no rare word to lean on."""
    if vocabulary not in ("realistic", "small"):
        raise ValueError(f"vocabulary is 'realistic' or 'small', not {vocabulary!r}")
    if vocabulary == "realistic" and _LOCOMO.exists():
        texts = []
        for conv in json.loads(_LOCOMO.read_text()):
            for key, turns in conv["conversation"].items():
                if key.startswith("session_") and isinstance(turns, list):
                    texts += [f"{t['speaker']}: {t['text']}" for t in turns]
        return texts
    rng = random.Random(7)
    return [" ".join(rng.choices(_WORDS, k=12)) for _ in range(3000)]


def seed(service: MemoryService, caller: Caller, texts: list[str], count: int) -> None:
    store = service.users.get(caller.identity)
    for start in range(0, count, 256):
        drafts = []
        for i in range(start, min(count, start + 256)):
            memory_id = new_uuid7()
            text = f"{texts[i % len(texts)]} (#{i})"  # unique text: every memory gets its own embedding
            drafts.append(EventDraft(event_id=memory_id, actor=caller.actor, payload=MemoryStored(
                memory_id=memory_id, text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL)))
        store.append(drafts)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=100)
    return statistics.median(samples), q[94], q[98]


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    texts = corpus()
    rng = random.Random(1)
    embedder = default_embedder()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        service = MemoryService(tmp, embedder)
        caller = Caller(Identity("local", "bench"), client_id="bench")
        seeded = 0
        for size in args.sizes:
            t = time.perf_counter()
            seed(service, caller, texts, size - seeded)
            seed_s = time.perf_counter() - t
            seeded = size
            store_ms = timed(lambda i: service.store(caller, StoreMemory(text=f"{rng.choice(texts)} [store {size}-{i}]")), args.samples)
            retrieve_ms = timed(lambda i: service.retrieve_context(caller, RetrieveQuery(query=rng.choice(texts)[:120])), args.samples)
            rows.append((size, seed_s, percentiles(store_ms), percentiles(retrieve_ms)))
            seeded += args.samples
        store = service.users.get(caller.identity)
        events = store.log.last_seq()
        t = time.perf_counter()
        store.rebuild()
        warm = events / (time.perf_counter() - t)
        store.view.db.execute("DELETE FROM embedding_cache")
        t = time.perf_counter()
        store.rebuild()
        cold = events / (time.perf_counter() - t)
        service.close()
    print(f"embedder threads={embedder.threads}, batch={embedder.batch_size}, samples={args.samples}")
    print()
    print("| memories | store p50 | store p95 | store p99 | retrieve p50 | retrieve p95 | retrieve p99 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size, _, s, r in rows:
        print(f"| {size:,} | {s[0]:.1f} ms | {s[1]:.1f} ms | {s[2]:.1f} ms | {r[0]:.1f} ms | {r[1]:.1f} ms | {r[2]:.1f} ms |")
    print()
    print("| replay of | cached embeddings | cold (embeds every text) |")
    print("|---:|---:|---:|")
    print(f"| {events:,} events | {warm:,.0f} events/s | {cold:,.0f} events/s |")


if __name__ == "__main__":
    main()
