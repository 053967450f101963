"""Retrieval quality on every evaluation set: LoCoMo (turn-by-turn chat) and the two sets of
another shape in bench/data (preferences, assistant-written facts).

    .venv/bin/python bench/retrieval_eval.py [--sets locomo preferences facts] [--ablations]
        [--leave-one-out] [--floor]

For every set: BM25 only, dense only and `retrieve_context` (as a tool call makes it, the floor
off so recall is measured on k answers, and with the floor on), R@5 and R@10 (and hit@10, MRR@10).
`--ablations` turns off, one at a time, each feature that leans on LoCoMo's shape (the memory
stored just before as BM25 context, neighbour propagation, the episode share, the subject rule)
and the adaptive fusion, on every set. `--leave-one-out` re-chooses the fusion's few parameters on
all LoCoMo conversations but one and scores that one (and the same per person on the other sets).
`--floor` measures the relevance floor: each user is asked the questions of the OTHER users (on
LoCoMo the other conversations; on the other sets the other sets' questions, since the people of
one set draw from one pool) and the share of empty answers is counted, beside the recall of its own
questions with and without the floor.

Each person (or conversation) is one user; memories are stored straight through the log (the same
events `store_memory` appends), LoCoMo's with their session date as `occurred_at`, the others in
the file's (shuffled) order with none.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import locomo  # noqa: E402
from locomo import Conversation, Question, QueryVectors, Result, Turn, caller_for, table  # noqa: E402

from memory.commands import MemoryFilter, RetrieveQuery  # noqa: E402
from memory.events import MemoryStored  # noqa: E402
from memory.ids import new_uuid7  # noqa: E402
from memory.log import EventDraft  # noqa: E402
from memory.model import MemoryType, Scope  # noqa: E402
from memory.service import MemoryService  # noqa: E402
from projections.embedder import default_embedder  # noqa: E402
from projections.ranking import DEFAULT_CONFIG, RankingConfig, rank_memories  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SETS = ("locomo", "preferences", "facts")


def load_jsonl(path: Path) -> tuple[list[Conversation], dict[str, str]]:
    """People of a bench/data file as conversations (one user each) and each memory's type."""
    people: dict[str, Conversation] = {}
    types: dict[str, str] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        conv = people.setdefault(row["person"], Conversation(row["person"], [], []))
        if row["kind"] == "memory":
            conv.turns.append(Turn(row["id"], row["text"], ""))
            types[row["id"]] = row["memory_type"]
        else:
            conv.questions.append(Question(row["question"], 0, list(row["answers"])))
    return list(people.values()), types


def load_set(name: str, locomo_path: Path = locomo.DATA) -> tuple[list[Conversation], dict[str, str]]:
    if name == "locomo":
        return locomo.load(locomo_path), {}
    return load_jsonl(DATA / f"{name}.jsonl")


def seed(service: MemoryService, conv: Conversation, types: dict[str, str]) -> None:
    store = service.users.get(caller_for(conv).identity)
    actor = caller_for(conv).actor
    for start in range(0, len(conv.turns), 256):
        drafts = []
        for turn in conv.turns[start:start + 256]:
            memory_id = new_uuid7()
            conv.memory_ids[memory_id] = turn.dia_id
            drafts.append(EventDraft(event_id=memory_id, actor=actor, payload=MemoryStored(
                memory_id=memory_id, text=turn.text,
                memory_type=MemoryType(types.get(turn.dia_id, MemoryType.EPISODIC.value)), scope=Scope.GLOBAL,
                occurred_at=turn.occurred_at or None)))
        store.append(drafts)


def service_retriever(service: MemoryService, **extra) -> locomo.Retriever:
    def retrieve(conv: Conversation, question: str, limit: int) -> list[str]:
        result = service.retrieve_context(caller_for(conv), RetrieveQuery(query=question, limit=limit, **extra))
        return [r.memory.id for r in result.memories]

    return retrieve


def ranking_retriever(service: MemoryService, vectors: QueryVectors, config: RankingConfig) -> locomo.Retriever:
    return locomo.ranking_retriever(service, vectors, config)


# -- the relevance floor -----------------------------------------------------------------------


def empty_share(service: MemoryService, vectors: QueryVectors, conversations: list[Conversation],
                foreign: Callable[[Conversation], list[str]], config: RankingConfig) -> tuple[int, int]:
    """(empty answers, questions) when each user is asked questions about something it never stored."""
    empty = asked = 0
    for conv in conversations:
        view = service.users.get(caller_for(conv).identity).view
        for question in foreign(conv):
            ranked = rank_memories(view.db, view.embeddings.index, question, vectors(question), MemoryFilter(), 10,
                                   0.0, datetime.now(UTC), config)
            asked += 1
            empty += not ranked
    return empty, asked


# -- parameters chosen on some users, scored on another ---------------------------------------

#: The fusion's parameters re-chosen by leave-one-out, and the values each may take.
TUNABLE = {
    "bm25_weight": (0.5, 0.7, 1.0, 1.5, 2.0),  # the dense half's weight is 1
}
_UNFLOORED = msgspec.structs.replace(DEFAULT_CONFIG, floor=0.0)


def choose(service: MemoryService, vectors: QueryVectors, conversations: list[Conversation]) -> RankingConfig:
    """Coordinate ascent on R@5 + R@10 from the default config."""

    def objective(config: RankingConfig) -> float:
        m = locomo.run(conversations, ranking_retriever(service, vectors, config)).overall()
        return m[0] + m[1]

    best, best_score = _UNFLOORED, objective(_UNFLOORED)
    for name, values in TUNABLE.items():
        for value in values:
            candidate = msgspec.structs.replace(best, **{name: value})
            if candidate != best and (score := objective(candidate)) > best_score + 1e-4:
                best, best_score = candidate, score
    return best


def leave_one_out(service: MemoryService, vectors: QueryVectors,
                  conversations: list[Conversation]) -> tuple[Result, list[tuple[str, dict]]]:
    per_question, chosen = [], []
    for held in conversations:
        config = choose(service, vectors, [c for c in conversations if c is not held])
        chosen.append((held.sample_id, {k: v for k, v in msgspec.structs.asdict(config).items()
                                        if getattr(_UNFLOORED, k) != v}))
        per_question += locomo.run([held], ranking_retriever(service, vectors, config)).per_question
    return Result(per_question, []), chosen


# -- rows -------------------------------------------------------------------------------------

_PLAIN = locomo._PLAIN
BASELINES = {
    "BM25 only": RankingConfig(dense_weight=0.0, **_PLAIN),
    "dense only": RankingConfig(bm25_weight=0.0, **_PLAIN),
}
#: Each feature that leans on LoCoMo's shape, and the fusion, turned off one at a time.
ABLATIONS = {
    "without the predecessor's text in BM25": {"context_column": 0.0},
    "without neighbour propagation": {"from_predecessor": 0.0, "from_successor": 0.0},
    "without the episode share": {"episode": 0.0},
    "without the subject rule": {"subject_factor": 1.0},
    "without date matching and 'when' -> time": {"date_match": 0.0, "time_answer": 0.0},
    "min-max fusion 0.6/0.4 (the previous rule) instead of z-scores": {
        "fusion": "minmax", "bm25_weight": 0.6, "dense_weight": 0.4},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--leave-one-out", action="store_true")
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--locomo", type=Path, default=locomo.DATA, help="the LoCoMo dev file (default ../shared/...)")
    args = parser.parse_args()

    embedder = default_embedder()
    loaded = {name: load_set(name, args.locomo) for name in args.sets}
    unfloored = msgspec.structs.replace(DEFAULT_CONFIG, floor=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        service = MemoryService(tmp, embedder)
        vectors = QueryVectors(service)
        for name, (conversations, types) in loaded.items():
            t = time.perf_counter()
            for conv in conversations:
                seed(service, conv, types)
            memories = sum(len(c.turns) for c in conversations)
            questions = sum(len(c.questions) for c in conversations)
            retrieve = service_retriever(service, min_score=0.0)
            for conv in conversations:  # warm up
                for q in conv.questions[:3]:
                    retrieve(conv, q.text, 10)
            print(f"## {name}: {len(conversations)} users, {memories} memories, {questions} questions "
                  f"(seeded in {time.perf_counter() - t:.1f} s)\n")
            ours = locomo.run(conversations, retrieve)
            rows = [(label, locomo.run(conversations, ranking_retriever(service, vectors, config)))
                    for label, config in BASELINES.items()]
            rows.append(("**retrieve_context** (floor off)", ours))
            rows.append(("retrieve_context, floor on (the default)",
                         locomo.run(conversations, service_retriever(service))))
            if args.ablations:
                rows.append(("rank_memories, defaults, floor off, recency 0",
                             locomo.run(conversations, ranking_retriever(service, vectors, unfloored))))
                rows += [(label, locomo.run(conversations, ranking_retriever(
                    service, vectors, msgspec.structs.replace(unfloored, **changes))))
                    for label, changes in ABLATIONS.items()]
            if args.leave_one_out:
                result, chosen = leave_one_out(service, vectors, conversations)
                rows.append(("fusion parameters chosen without the user scored", result))
            print(table(rows))
            lat = ours.latencies_ms
            print(f"\nretrieve_context in process: p50 {statistics.median(lat):.1f} ms, "
                  f"p95 {statistics.quantiles(lat, n=20)[18]:.1f} ms")
            if args.leave_one_out:
                for sample_id, changed in chosen:
                    print(f"- scoring {sample_id}: chosen {changed or 'the defaults'}")
            print()
        if args.floor:
            print("## The relevance floor: questions about what a user never stored\n")
            lines = ["| set | users | foreign questions | empty answers | R@5 / R@10 own questions, floor off "
                     "| floor on |", "|---|---:|---:|---:|---:|---:|"]
            for name, (conversations, _) in loaded.items():
                others = [q.text for other, (cs, _) in loaded.items() if other != name for c in cs for q in c.questions]
                if name == "locomo":
                    def foreign(conv, cs=conversations):
                        return [q.text for c in cs if c is not conv for q in c.questions]
                else:
                    def foreign(conv, others=list(dict.fromkeys(others))):
                        return others
                empty, asked = empty_share(service, vectors, conversations, foreign, DEFAULT_CONFIG)
                off = locomo.run(conversations, ranking_retriever(service, vectors, unfloored)).overall()
                on = locomo.run(conversations, ranking_retriever(service, vectors, DEFAULT_CONFIG)).overall()
                lines.append(f"| {name} | {len(conversations)} | {asked} | {empty / asked:.1%} | "
                             f"{off[0]:.3f} / {off[1]:.3f} | {on[0]:.3f} / {on[1]:.3f} |")
            print("\n".join(lines))
        service.close()


if __name__ == "__main__":
    main()
