"""Full projection rebuild (replay) of one user's log: events/s with cached embeddings and cold.

    .venv/bin/python bench/replay.py [--events 100000] [--cold-events 10000] [--data-dir DIR]

A log of `--events` events is written in-process for one user, in batches of 256 through
`UserStore.append`, with this mix in every 10 events: 7 `memory.stored` (LoCoMo turns when the
data is beside the repository, made unique with " (#i)"), 2 `memories.read` (what every
retrieve_context appends: the query and 10 returned ids), 1 `memory.updated` (alternately a new
text and new tags). While seeding, each distinct corpus text is embedded once and "<text> (#i)"
reuses its vector (as bench/latency.py does), so seeding does not take the model's ~10 min.

Then, with the real embedder (model loaded before timing):
- cached: `UserStore.rebuild()` of the whole log; every text's vector is in the embedding cache.
- cold: the embedding cache emptied, `UserStore.rebuild(to_seq=--cold-events)`: every text of the
  first `--cold-events` events is embedded again (all 100k would take ~10 min at ~170 texts/s,
  hence the smaller default; the rate is per event of that prefix, same mix).
Each rebuild's time is split by projection (each projection's `apply` timed from outside).

Target: >= 5,000 events/s with cached embeddings.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_latency import corpus  # noqa: E402
from latency import ReusingEmbedder, loadavg  # noqa: E402

from memory.events import MemoriesRead, MemoryStored, MemoryUpdated  # noqa: E402
from memory.identity import Identity  # noqa: E402
from memory.ids import new_uuid7  # noqa: E402
from memory.log import EventDraft  # noqa: E402
from memory.model import MemoryType, Scope  # noqa: E402
from memory.service import Caller, MemoryService  # noqa: E402
from projections.embedder import default_embedder  # noqa: E402

CALLER = Caller(Identity("local", "replay"), client_id="bench")


def write_log(service: MemoryService, texts: list[str], events: int) -> dict[str, int]:
    store = service.users.get(CALLER.identity)
    rng = random.Random(5)
    ids: list[str] = []
    kinds: dict[str, int] = defaultdict(int)
    n = 0
    for start in range(0, events, 256):
        drafts = []
        for i in range(start, min(events, start + 256)):
            slot = i % 10
            if slot in (2, 6) and ids:
                payload = MemoriesRead(operation="retrieve_context", query=rng.choice(texts)[:120],
                                       filters={"as_of": None}, returned_ids=rng.sample(ids, min(10, len(ids))))
            elif slot == 9 and ids:
                target = rng.choice(ids)
                payload = (MemoryUpdated(memory_id=target, text=f"{rng.choice(texts)} (#u{i})") if i % 20 == 9
                           else MemoryUpdated(memory_id=target, tags=["bench", f"t{i % 7}"]))
            else:
                memory_id = new_uuid7()
                ids.append(memory_id)
                payload = MemoryStored(memory_id=memory_id, text=f"{texts[n % len(texts)]} (#{n})",
                                       memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL)
                n += 1
            kinds[payload.__class__.__name__] += 1
            event_id = payload.memory_id if isinstance(payload, MemoryStored) else new_uuid7()
            drafts.append(EventDraft(event_id=event_id, actor=CALLER.actor, payload=payload))
        store.append(drafts)
    return dict(kinds)


def timed_rebuild(store, to_seq: int | None) -> tuple[int, float, dict[str, float]]:
    """(events applied, seconds, seconds per projection)."""
    per: dict[str, float] = defaultdict(float)
    originals = []
    for p in store.view.projections.projections:
        original = p.apply

        def wrapped(db, events, _original=original, _name=p.name):
            t = time.perf_counter()
            try:
                return _original(db, events)
            finally:
                per[_name] += time.perf_counter() - t

        p.apply = wrapped
        originals.append((p, original))
    try:
        t = time.perf_counter()
        applied = store.rebuild(to_seq)
        return applied, time.perf_counter() - t, dict(per)
    finally:
        for p, original in originals:
            p.apply = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100000)
    parser.add_argument("--cold-events", type=int, default=10000,
                        help="replay this prefix with the embedding cache emptied (0: skip)")
    parser.add_argument("--data-dir", type=Path, help="keep the data here (reused if it has the log already)")
    args = parser.parse_args()

    texts = corpus()
    embedder = default_embedder()
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="bench-replay-")
        data_dir = Path(tmp) / "data"
    else:
        data_dir = args.data_dir
    try:
        service = MemoryService(data_dir, ReusingEmbedder(embedder))
        have = service.users.get(CALLER.identity).log.last_seq()
        t = time.perf_counter()
        kinds = write_log(service, texts, args.events) if have == 0 else {"(reused log)": have}
        seed_s = time.perf_counter() - t
        service.close()
        print(f"[{time.strftime('%H:%M:%S')}] log written in {seed_s:.1f} s: {kinds}", file=sys.stderr, flush=True)

        embedder.embed_query("warm the model up")
        service = MemoryService(data_dir, embedder)
        store = service.users.get(CALLER.identity)
        events = store.log.last_seq()
        memories = store.view.db.execute("SELECT count(*) FROM memories").fetchone()[0]
        load = loadavg()
        rows = []
        applied, secs, per = timed_rebuild(store, None)
        rows.append(("cached embeddings", applied, secs, per, load))
        print(f"[{time.strftime('%H:%M:%S')}] cached: {applied / secs:,.0f} events/s", file=sys.stderr, flush=True)
        if args.cold_events:
            load = loadavg()
            db = store.view.db
            db.execute("CREATE TEMP TABLE saved_cache AS SELECT * FROM embedding_cache")
            db.execute("DELETE FROM embedding_cache")
            applied, secs, per = timed_rebuild(store, min(args.cold_events, events))
            rows.append((f"cold (cache emptied), first {applied:,} events", applied, secs, per, load))
            # Put the cache back and bring the projections to the end of the log (cached, fast).
            db.execute("INSERT OR IGNORE INTO embedding_cache SELECT * FROM saved_cache")
            db.execute("DROP TABLE saved_cache")
            store.catch_up()
        service.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    names = list(rows[0][3])
    print(f"Host: {os.cpu_count()} CPUs, shared; embedder threads={embedder.threads}, batch={embedder.batch_size}. "
          f"Log: {events:,} events ({memories:,} memories; mix {kinds}).")
    print()
    print("| replay | events | seconds | events/s | load avg | " + " | ".join(names) + " |")
    print("|---|---:|---:|---:|---|" + "---:|" * len(names))
    for name, applied, secs, per, load in rows:
        shares = " | ".join(f"{per.get(n, 0):.1f} s" for n in names)
        print(f"| {name} | {applied:,} | {secs:.1f} | {applied / secs:,.0f} | {load} | {shares} |")
    print()
    print("(per-projection columns: time inside each projection's apply; the rest is reading the "
          "log, decoding events and committing)")
    cached = rows[0][1] / rows[0][2]
    print()
    print("| target | measured | |")
    print("|---|---|---|")
    print(f"| >= 5,000 events/s cached | {cached:,.0f} events/s | {'met' if cached >= 5000 else '**missed**'} |")


if __name__ == "__main__":
    main()
