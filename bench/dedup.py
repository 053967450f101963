"""The duplicate detector: its precision and recall on labelled pairs, and what it costs a store.

    .venv/bin/python bench/dedup.py [--sizes 1000 10000 100000] [--samples 100]

Pairs (`bench/dedup_pairs.jsonl`, written by hand): `duplicate` (the same fact in nearly the same
words: case, punctuation, a dropped article, British and American spelling, a digit for a word),
`paraphrase` (the same fact in other words) and `different` (another fact about the same thing,
most of them one word or one number away: the hard negatives). For each pair the first text is
stored, then the second, through `MemoryService.store_memory` with the real model; a pair counts
as flagged when the second answers `duplicate_of` the first. Paraphrases should not be merged
(the assistant decides); they should come back in `similar`.

Latency: memories are seeded straight through the log with random unit vectors primed in place
of the model's (the check's cost is one indexed lookup and one matrix-vector product, whatever
the vectors say), then each measured store goes through `store_memory` with a real text, so its
time includes the model call for the new text.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from memory.commands import StoreMemory
from memory.events import MemoryStored
from memory.identity import Identity
from memory.ids import new_uuid7
from memory.log import EventDraft
from memory.model import MemoryType, Scope
from memory.service import Caller, MemoryService
from projections.embedder import default_embedder

PAIRS = Path(__file__).with_name("dedup_pairs.jsonl")


def detector_table(service: MemoryService) -> str:
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    flagged: dict[str, list[bool]] = {"duplicate": [], "paraphrase": [], "different": []}
    similar: dict[str, list[bool]] = {"duplicate": [], "paraphrase": [], "different": []}
    for n, pair in enumerate(pairs):
        # One person per pair: nothing else stored can be what the second text duplicates.
        caller = Caller(Identity("local", f"pair-{n}"), client_id="bench")
        first = service.store_memory(caller, StoreMemory(text=pair["a"]))
        second = service.store_memory(caller, StoreMemory(text=pair["b"]))
        flagged[pair["label"]].append(second.duplicate_of == first.memory.id)
        similar[pair["label"]].append(second.duplicate_of == first.memory.id
                                      or first.memory.id in [m.id for m in second.similar])
    tp, fn = sum(flagged["duplicate"]), flagged["duplicate"].count(False)
    fp_para, fp_diff = sum(flagged["paraphrase"]), sum(flagged["different"])
    rows = [
        "| pairs | count | flagged `duplicate_of` | in `duplicate_of` or `similar` |",
        "|---|---:|---:|---:|",
    ]
    for label in ("duplicate", "paraphrase", "different"):
        rows.append(f"| {label} | {len(flagged[label])} | {sum(flagged[label])} | {sum(similar[label])} |")
    precision = tp / max(1, tp + fp_para + fp_diff)
    recall = tp / max(1, tp + fn)
    rows += ["", f"precision of `duplicate_of` {precision:.2f}, recall {recall:.2f} (paraphrases and different "
                 f"facts are the negatives); paraphrases surfaced in `similar`: "
                 f"{sum(similar['paraphrase'])}/{len(similar['paraphrase'])}"]
    return "\n".join(rows)


def seed(service: MemoryService, caller: Caller, count: int, rng: np.random.Generator) -> None:
    store = service.users.get(caller.identity)
    for start in range(0, count, 1000):
        texts = [f"seeded memory number {i} about topic {i % 97}" for i in range(start, min(count, start + 1000))]
        vectors = rng.standard_normal((len(texts), service.embedder.dimensions)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.view.embeddings.prime_vectors(texts, vectors)
        drafts = []
        for text in texts:
            memory_id = new_uuid7()
            drafts.append(EventDraft(event_id=memory_id, actor=caller.actor, payload=MemoryStored(
                memory_id=memory_id, text=text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL)))
        store.append(drafts, embed_now=True)


def latency_table(service: MemoryService, sizes: list[int], samples: int) -> str:
    rng = np.random.default_rng(3)
    caller = Caller(Identity("local", "latency"), client_id="bench")
    words = ("garden project deadline coffee budget meeting python release design review travel doctor "
             "family music invoice server backup launch marketing hiring roadmap").split()
    rows = ["| memories | store p50 | store p95 | of which the model (p50) |", "|---:|---:|---:|---:|"]
    seeded = 0
    for size in sizes:
        seed(service, caller, size - seeded, rng)
        seeded = size
        store_ms, model_ms = [], []
        for i in range(samples):
            text = " ".join(rng.choice(words, 10)) + f" ({size}-{i})"
            t = time.perf_counter()
            service.embedder.embed_documents([text + " (model only)"])
            model_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            service.store_memory(caller, StoreMemory(text=text))
            store_ms.append((time.perf_counter() - t) * 1000)
        seeded += samples
        q = statistics.quantiles(store_ms, n=100)
        rows.append(f"| {size:,} | {statistics.median(store_ms):.1f} ms | {q[94]:.1f} ms | "
                    f"{statistics.median(model_ms):.1f} ms |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    embedder = default_embedder()
    with tempfile.TemporaryDirectory() as tmp:
        service = MemoryService(tmp, embedder)
        try:
            print(detector_table(service))
            if args.sizes:
                print()
                print(latency_table(service, args.sizes, args.samples))
        finally:
            service.close()


if __name__ == "__main__":
    main()
