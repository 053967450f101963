"""Retrieval quality on LoCoMo: does retrieve_context find the turns that answer a question?

    .venv/bin/python bench/locomo.py [--conversations conv-26 conv-30] [--ablations] [--leave-one-out]
    .venv/bin/python bench/locomo.py --via-mcp [--conversations ...]

Protocol. Each conversation of `../shared/data/locomo/locomo-dev.json` (beside the repository;
CC BY-NC 4.0, read from there, never copied into the project) is one user. Each turn is one
memory with text "<speaker>: <text>" and its session's date as `occurred_at`, stored in
conversation order. Every question of categories 1-4 with evidence is asked of its own
conversation, and the memories returned are scored against the evidence turns: recall@5,
recall@10, hit@10 (any evidence in the top 10) and MRR@10, per category and overall.

Rows: "ours" is `MemoryService.retrieve_context` exactly as a tool call makes it (default
`recency_weight`, so what a user gets), and with `recency_weight=0`. The baselines and the
ablations call `projections.ranking.rank_memories` on the same projections with another
`RankingConfig`, so they share the index and the tokenisation. `--ablations` turns off one kind
of evidence at a time; `--leave-one-out` re-chooses the weights on four conversations and scores
the fifth, to show how much the weights are fitted to these five.

The retrieval call is one function (`Retriever`), so another transport (MCP over HTTP) can be
measured by swapping it: `--via-mcp` seeds the same turns into a second data directory (each
conversation a local account of that name), starts a real `memory serve` on it (loopback,
`--call-rate-limit 1000000`), asks every question through the MCP SDK's client over HTTP
(`retrieve_context`, one token per conversation) and prints those rows beside the in-process ones,
with how many questions got the very same ranked turns both ways.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np

from memory.commands import MemoryFilter, RetrieveQuery
from memory.events import MemoryStored
from memory.identity import Identity
from memory.ids import new_uuid7
from memory.log import EventDraft
from memory.model import MemoryType, Scope
from memory.service import Caller, MemoryService
from memory.validation import clean_text, clean_timestamp
from projections.embedder import default_embedder
from projections.ranking import DEFAULT_CONFIG, RankingConfig, rank_memories

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo-dev.json"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
_EVIDENCE_ID = re.compile(r"D:?(\d+):0*(\d+)")
_SESSION = re.compile(r"session_(\d+)")
_CLIENT = "locomo-bench"


# -- the data ---------------------------------------------------------------------------------


@dataclass
class Turn:
    dia_id: str
    text: str
    occurred_at: str


@dataclass
class Question:
    text: str
    category: int
    evidence: list[str]


@dataclass
class Conversation:
    sample_id: str
    turns: list[Turn]
    questions: list[Question]
    memory_ids: dict[str, str] = field(default_factory=dict)  # memory id -> dia_id


def _session_time(stamp: str) -> str:
    when = datetime.strptime(stamp.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)
    return clean_timestamp(when.isoformat())


def normalised_evidence(raw: list[str], known: set[str]) -> list[str]:
    """Evidence ids as turn ids: "D8:6; D9:17" and "D8:6 D9:17" split, "D:11:26" -> D11:26,
    "D30:05" -> D30:5; a bare "D" or an id naming no turn is dropped."""
    found: list[str] = []
    for item in raw:
        for m in _EVIDENCE_ID.finditer(item):
            dia_id = f"D{int(m.group(1))}:{int(m.group(2))}"
            if dia_id in known and dia_id not in found:
                found.append(dia_id)
    return found


def load(path: Path = DATA) -> list[Conversation]:
    if not path.exists():
        sys.exit(f"LoCoMo data not found at {path}: this bench reads ../shared/data/locomo/locomo-dev.json "
                 "beside the repository (it is never copied into the project)")
    conversations = []
    for raw in json.loads(path.read_text()):
        conv = raw["conversation"]
        sessions = sorted(int(m.group(1)) for k in conv if (m := _SESSION.fullmatch(k)))
        turns = []
        for n in sessions:
            at = _session_time(conv[f"session_{n}_date_time"])
            turns += [Turn(t["dia_id"], clean_text(f"{t['speaker']}: {t['text']}"), at) for t in conv[f"session_{n}"]]
        known = {t.dia_id for t in turns}
        questions = []
        for qa in raw["qa"]:
            if qa["category"] not in CATEGORIES:
                continue
            evidence = normalised_evidence(qa.get("evidence", []), known)
            if evidence:  # some category-3 questions have none: not a retrieval question
                questions.append(Question(qa["question"], qa["category"], evidence))
        conversations.append(Conversation(raw["sample_id"], turns, questions))
    return conversations


# -- seeding and retrieving -------------------------------------------------------------------


def caller_for(conv: Conversation) -> Caller:
    return Caller(Identity("locomo", conv.sample_id), client_id=_CLIENT)


def seed(service: MemoryService, conv: Conversation, caller: Caller | None = None) -> None:
    """Store every turn, in conversation order, in batches straight through the log."""
    caller = caller or caller_for(conv)
    store = service.users.get(caller.identity)
    for start in range(0, len(conv.turns), 256):
        drafts = []
        for turn in conv.turns[start:start + 256]:
            memory_id = new_uuid7()
            conv.memory_ids[memory_id] = turn.dia_id
            drafts.append(EventDraft(event_id=memory_id, actor=caller.actor, payload=MemoryStored(
                memory_id=memory_id, text=turn.text, memory_type=MemoryType.EPISODIC, scope=Scope.GLOBAL,
                occurred_at=turn.occurred_at)))
        store.append(drafts)


#: (conversation, question, limit) -> memory ids, best first
Retriever = Callable[[Conversation, str, int], list[str]]


def service_retriever(service: MemoryService, recency_weight: float | None = None) -> Retriever:
    """retrieve_context as a tool call makes it; `recency_weight` None keeps the default."""
    extra = {} if recency_weight is None else {"recency_weight": recency_weight}

    def retrieve(conv: Conversation, question: str, limit: int) -> list[str]:
        result = service.retrieve_context(caller_for(conv), RetrieveQuery(query=question, limit=limit, **extra))
        return [r.memory.id for r in result.memories]

    return retrieve


class QueryVectors:
    """Query embeddings, computed once and shared by every ranking-level retriever."""

    def __init__(self, service: MemoryService):
        self.service = service
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self._cache:
            self._cache[text] = self.service.embedder.embed_query(text)
        return self._cache[text]


def ranking_retriever(service: MemoryService, vectors: QueryVectors, config: RankingConfig,
                      recency_weight: float = 0.0, now: Callable[[Conversation], datetime] | None = None) -> Retriever:
    """rank_memories on the user's projections with another config (baselines, ablations)."""

    def retrieve(conv: Conversation, question: str, limit: int) -> list[str]:
        view = service.users.get(caller_for(conv).identity).view
        when = now(conv) if now else datetime.now(UTC)
        ranked = rank_memories(view.db, view.embeddings.index, question, vectors(question), MemoryFilter(), limit,
                               recency_weight, when, config)
        return [r.memory_id for r in ranked]

    return retrieve


def mcp_run(conversations: list[Conversation], data_dir: Path,
            settings: list[dict]) -> tuple[list[Result], list[list[list[str]]], float, float, list]:
    """Every question through a real server: per entry of `settings` (extra retrieve_context
    arguments) a Result and the turns found for each question; also the seed and start times."""
    import asyncio
    from contextlib import AsyncExitStack

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from memory.identity import LOCAL_ISSUER
    from memory.server.process import ServerProcess

    t = time.perf_counter()
    service = MemoryService(data_dir, default_embedder())
    try:
        for conv in conversations:
            seed(service, conv, Caller(Identity(LOCAL_ISSUER, conv.sample_id), client_id=_CLIENT))
    finally:
        service.close()
    seed_s = time.perf_counter() - t

    async def ask_all(url: str, token_for: Callable[[str], str]) -> list[tuple[dict, list[float]]]:
        """Every question once per setting, in `run`'s order: the ids answered and the latencies."""
        out = []
        async with AsyncExitStack() as stack:
            clients: dict[str, Client] = {}
            for conv in conversations:
                http = await stack.enter_async_context(httpx2.AsyncClient(
                    headers={"Authorization": f"Bearer {token_for(conv.sample_id)}"}, timeout=120))
                clients[conv.sample_id] = await stack.enter_async_context(
                    Client(streamable_http_client(url, http_client=http), mode="auto"))

            async def ask(conv: Conversation, question: str, extra: dict) -> list[tuple[str, float]]:
                result = await clients[conv.sample_id].call_tool(
                    "retrieve_context", {"query": question, "limit": 10, **extra})
                if result.is_error:
                    raise RuntimeError(f"retrieve_context failed: {result.content}")
                memories = result.structured_content["memories"]
                return [(m["id"], m["score"]) for m in memories]

            for conv in conversations:  # warm up, as the in-process path does
                for q in conv.questions[:5]:
                    await ask(conv, q.text, {})
            for extra in settings:
                answers: dict[tuple[str, str], list[tuple[str, float]]] = {}  # -> (memory id, score)
                latencies = []
                for conv in conversations:
                    for q in conv.questions:
                        t = time.perf_counter()
                        answers[(conv.sample_id, q.text)] = await ask(conv, q.text, extra)
                        latencies.append((time.perf_counter() - t) * 1000)
                out.append((answers, latencies))
        return out

    results, founds, scores = [], [], []
    with ServerProcess(data_dir, extra_args=["--call-rate-limit", "1000000"]) as server:
        server.wait_ready()
        started = server.started_in or 0.0
        asked = asyncio.run(ask_all(server.mcp_url, lambda user: server.token(user, client_id=_CLIENT)))
    for answers, latencies in asked:
        found: list[list[str]] = []
        result = run(conversations, recording(lambda c, q, n, a=answers: [i for i, _ in a[(c.sample_id, q)][:n]], found))
        result.latencies_ms = latencies  # the HTTP calls' own, not the lookup's
        results.append(result)
        founds.append(found)
        scores.append([[v for _, v in answers[(c.sample_id, q.text)]] for c in conversations for q in c.questions])
    return results, founds, seed_s, started, scores


def tie_swapped(local: list[str], remote: list[str], remote_scores: list[float]) -> bool:
    """The same turns, and every position that differs holds a score another differing position
    shares: only the order of equal-scored memories (ties break on memory id, which differs between
    the two data directories) tells the two answers apart."""
    if sorted(local) != sorted(remote):
        return False
    differ = [i for i, (a, b) in enumerate(zip(local, remote, strict=True)) if a != b]
    return all(any(remote_scores[j] == remote_scores[i] for j in differ if j != i) for i in differ)


def recording(retrieve: Retriever, found: list[list[str]]) -> Retriever:
    """The same retriever, noting the turns (dia ids) it returned for each question, in order."""

    def wrapped(conv: Conversation, question: str, limit: int) -> list[str]:
        ids = retrieve(conv, question, limit)
        found.append([conv.memory_ids.get(i, "") for i in ids])
        return ids

    return wrapped


# -- scoring ----------------------------------------------------------------------------------


def question_metrics(found: list[str], evidence: list[str]) -> np.ndarray:
    """recall@5, recall@10, hit@10, MRR@10 of one question."""
    wanted = set(evidence)
    r5 = len(wanted & set(found[:5])) / len(wanted)
    r10 = len(wanted & set(found[:10])) / len(wanted)
    first = next((i for i, f in enumerate(found[:10]) if f in wanted), None)
    return np.array([r5, r10, 1.0 if first is not None else 0.0, 0.0 if first is None else 1 / (first + 1)])


@dataclass
class Result:
    per_question: list[tuple[int, np.ndarray]]  # (category, metrics)
    latencies_ms: list[float]

    def overall(self) -> np.ndarray:
        return np.mean([m for _, m in self.per_question], axis=0)

    def by_category(self) -> dict[int, tuple[int, np.ndarray]]:
        out = {}
        for cat in sorted({c for c, _ in self.per_question}):
            ms = [m for c, m in self.per_question if c == cat]
            out[cat] = (len(ms), np.mean(ms, axis=0))
        return out


def run(conversations: list[Conversation], retrieve: Retriever, limit: int = 10) -> Result:
    per_question, latencies = [], []
    for conv in conversations:
        for q in conv.questions:
            t = time.perf_counter()
            ids = retrieve(conv, q.text, limit)
            latencies.append((time.perf_counter() - t) * 1000)
            found = [conv.memory_ids.get(i, "") for i in ids]
            per_question.append((q.category, question_metrics(found, q.evidence)))
    return Result(per_question, latencies)


# -- weights chosen on some conversations, scored on another --------------------------------

#: The weights re-chosen by leave-one-out, and the values each may take (the default included).
TUNABLE = {
    "bm25_weight": (0.7, 1.0, 1.5),
    "context_column": (0.2, 0.4, 0.6),
    "from_predecessor": (0.2, 0.3, 0.5),
    "from_successor": (0.1, 0.3, 0.5),
    "episode": (0.2, 0.4, 0.6),
    "date_match": (0.5, 1.0, 2.0),
    "time_answer": (0.25, 0.5, 1.0),
    "subject_factor": (1.5, 2.0, 3.0),
}


def choose_weights(service: MemoryService, vectors: QueryVectors, conversations: list[Conversation]) -> RankingConfig:
    """Coordinate ascent on recall@5 + recall@10 from the default config."""

    def objective(config: RankingConfig) -> float:
        m = run(conversations, ranking_retriever(service, vectors, config)).overall()
        return m[0] + m[1]

    best = DEFAULT_CONFIG
    best_score = objective(best)
    for _ in range(2):
        improved = False
        for name, values in TUNABLE.items():
            for value in values:
                changes = {name: value}
                candidate = msgspec.structs.replace(best, **changes)
                if candidate == best:
                    continue
                score = objective(candidate)
                if score > best_score + 1e-4:
                    best, best_score, improved = candidate, score, True
        if not improved:
            break
    return best


def leave_one_out(service: MemoryService, vectors: QueryVectors,
                  conversations: list[Conversation]) -> tuple[Result, list[tuple[str, dict]]]:
    per_question: list[tuple[int, np.ndarray]] = []
    chosen = []
    for held in conversations:
        rest = [c for c in conversations if c is not held]
        config = choose_weights(service, vectors, rest)
        changed = {k: v for k, v in msgspec.structs.asdict(config).items()
                   if getattr(DEFAULT_CONFIG, k) != v}
        chosen.append((held.sample_id, changed))
        per_question += run([held], ranking_retriever(service, vectors, config)).per_question
    return Result(per_question, []), chosen


def one_user_latency(service: MemoryService, conversations: list[Conversation]) -> tuple[int, list[float]]:
    """Every turn of every conversation stored as one user; retrieve_context timed per question."""
    merged = Conversation("all", [t for c in conversations for t in c.turns],
                          [q for c in conversations for q in c.questions])
    seed(service, merged)
    retrieve = service_retriever(service)
    for q in merged.questions[:20]:  # warm up
        retrieve(merged, q.text, 10)
    return len(merged.turns), run([merged], retrieve).latencies_ms


# -- output -----------------------------------------------------------------------------------


def table(rows: list[tuple[str, Result]]) -> str:
    lines = ["| retriever | R@5 | R@10 | hit@10 | MRR@10 |", "|---|---:|---:|---:|---:|"]
    for name, result in rows:
        m = result.overall()
        lines.append(f"| {name} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} |")
    return "\n".join(lines)


def category_table(result: Result) -> str:
    lines = ["| category | questions | R@5 | R@10 | hit@10 | MRR@10 |", "|---|---:|---:|---:|---:|---:|"]
    for cat, (n, m) in result.by_category().items():
        lines.append(f"| {cat} {CATEGORIES[cat]} | {n} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} |")
    m = result.overall()
    lines.append(f"| all | {len(result.per_question)} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} |")
    return "\n".join(lines)


#: Everything beyond the fused relevance turned off: the ranking as it was before this bench.
_PLAIN = dict(context_column=0.0, from_predecessor=0.0, from_successor=0.0, episode=0.0, date_match=0.0,
              time_answer=0.0, subject_factor=1.0, common_word_share=1.0, max_words=1000, postings_budget=10**9, floor=0.0)
BASELINES = {
    "BM25 only (FTS5 porter, query words OR-ed)": RankingConfig(dense_weight=0.0, **_PLAIN),
    "dense only (all-MiniLM-L6-v2)": RankingConfig(bm25_weight=0.0, **_PLAIN),
    "hybrid before this change (0.6/0.4 min-max, depth 50)": RankingConfig(
        depth=50, fusion="minmax", bm25_weight=0.6, dense_weight=0.4, **_PLAIN),
}

ABLATIONS = {
    "without the predecessor's text in BM25": {"context_column": 0.0},
    "without neighbour propagation": {"from_predecessor": 0.0, "from_successor": 0.0},
    "without the episode share": {"episode": 0.0},
    "without date matching": {"date_match": 0.0},
    "without 'when' -> time in text": {"time_answer": 0.0},
    "without subject matching": {"subject_factor": 1.0},
    "candidate depth 100 (not 50)": {"depth": 100},
    "every query word in the BM25 match (no common-word cut)": {"common_word_share": 1.0},
    "common-word cut at 10% of memories (not 20%)": {"common_word_share": 0.1},
    "at most 4 query words matched (not 8)": {"max_words": 4},
    "every query word matched (no 8-word cap)": {"max_words": 100},
    "BM25 alone + all evidence (no dense)": {"bm25_weight": 1.0, "dense_weight": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", nargs="+", metavar="ID",
                        help="sample ids (conv-26) or positions (0-4) to use; default all")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--ablations", action="store_true", help="also turn off each kind of evidence in turn")
    parser.add_argument("--leave-one-out", action="store_true",
                        help="re-choose the weights on all but one conversation, score that one (minutes)")
    parser.add_argument("--via-mcp", action="store_true",
                        help="also ask every question through a real `memory serve` over HTTP (MCP SDK client)")
    parser.add_argument("--latency", action="store_true",
                        help="also time retrieve_context with every conversation stored as one user")
    args = parser.parse_args()

    conversations = load(args.data)
    if args.conversations:
        picked = []
        for key in args.conversations:
            match = [c for i, c in enumerate(conversations) if key in (c.sample_id, str(i))]
            if not match:
                sys.exit(f"no conversation {key!r}; have {', '.join(c.sample_id for c in conversations)}")
            picked += match
        conversations = picked

    embedder = default_embedder()
    with tempfile.TemporaryDirectory() as tmp:
        service = MemoryService(tmp, embedder)
        t = time.perf_counter()
        for conv in conversations:
            seed(service, conv)
        seed_s = time.perf_counter() - t
        vectors = QueryVectors(service)
        retrieve = service_retriever(service)
        for conv in conversations:  # warm up: the model's first calls are slow
            for q in conv.questions[:5]:
                retrieve(conv, q.text, 10)
        ours = run(conversations, retrieve)
        rows = [(name, run(conversations, ranking_retriever(service, vectors, config)))
                for name, config in BASELINES.items()]
        default_recency = RetrieveQuery().recency_weight
        rows.append((f"**ours: retrieve_context, default recency_weight {default_recency}**", ours))
        rows.append(("ours, recency_weight 0", run(conversations, service_retriever(service, 0.0))))
        # As if each question were asked the day after its conversation's last session.
        day_after = {c.sample_id: datetime.fromisoformat(c.turns[-1].occurred_at.replace("Z", "+00:00"))
                     + timedelta(days=1) for c in conversations}
        for weight in (0.3, 0.1):
            rows.append((f"ours, recency_weight {weight}, asked the day after the last session",
                         run(conversations, ranking_retriever(service, vectors, DEFAULT_CONFIG, weight,
                                                              lambda c: day_after[c.sample_id]))))
        default = run(conversations, ranking_retriever(service, vectors, DEFAULT_CONFIG))
        ablations = []
        if args.ablations:
            ablations = [("all of it (the default config)", default)] + [
                (name, run(conversations, ranking_retriever(
                    service, vectors, msgspec.structs.replace(DEFAULT_CONFIG, **changes))))
                for name, changes in ABLATIONS.items()]
        loo = None
        if args.leave_one_out:
            loo = leave_one_out(service, vectors, conversations)
        one_user = None
        if args.latency:
            one_user = one_user_latency(service, conversations)
        via_mcp = None
        if args.via_mcp:
            settings = [{}, {"recency_weight": 0.0}]
            local = []
            for extra in settings:
                found: list[list[str]] = []
                result = run(conversations, recording(service_retriever(service, extra.get("recency_weight")), found))
                local.append((result, found))
            via_mcp = (settings, local, *mcp_run(conversations, Path(tmp) / "mcp", settings))
        service.close()

    questions = sum(len(c.questions) for c in conversations)
    memories = sum(len(c.turns) for c in conversations)
    print(f"LoCoMo: {len(conversations)} conversations ({', '.join(c.sample_id for c in conversations)}), "
          f"{memories} memories, {questions} questions; seeded in {seed_s:.1f} s")
    print()
    print(table(rows))
    print()
    print("Ours (retrieve_context, defaults) by category:")
    print()
    print(category_table(ours))
    print()
    lat = ours.latencies_ms
    print(f"retrieve_context latency over {len(lat)} questions ({memories // max(1, len(conversations))} "
          f"memories per user on average): p50 {statistics.median(lat):.1f} ms, "
          f"p95 {statistics.quantiles(lat, n=20)[18]:.1f} ms")
    if one_user:
        size, lat = one_user
        print(f"retrieve_context latency with all {size} memories as one user, over {len(lat)} questions: "
              f"p50 {statistics.median(lat):.1f} ms, p95 {statistics.quantiles(lat, n=20)[18]:.1f} ms")
    if via_mcp:
        settings, local, remote, remote_found, mcp_seed_s, started, remote_scores = via_mcp
        print()
        print(f"Through MCP over HTTP (a real `memory serve` on loopback, SDK client, one token per conversation; "
              f"same turns seeded in another data directory in {mcp_seed_s:.1f} s, /healthz after {started:.2f} s):")
        print()
        lines = ["| retrieve_context | path | R@5 | R@10 | hit@10 | MRR@10 | same ranked turns as in-process "
                 "| of the others: same turns, only equal-scored ones swapped | latency p50 | p95 |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for extra, (lres, lfound), rres, rfound, rscores in zip(settings, local, remote, remote_found, remote_scores,
                                                                 strict=True):
            name = (f"recency_weight {extra['recency_weight']}" if extra else
                    f"defaults (recency_weight {RetrieveQuery(query='').recency_weight} in-process; the tool's own over MCP)")
            same = sum(a == b for a, b in zip(lfound, rfound, strict=True))
            ties = sum(tie_swapped(a, b, sc) for a, b, sc in zip(lfound, rfound, rscores, strict=True) if a != b)
            for path, res, agree, tied in (("in-process", lres, "", ""),
                                           ("MCP over HTTP", rres, f"{same}/{len(rfound)}", f"{ties}/{len(rfound) - same}")):
                m, lat = res.overall(), res.latencies_ms
                lines.append(f"| {name} | {path} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} | {agree} | "
                             f"{tied} | {statistics.median(lat):.1f} ms | {statistics.quantiles(lat, n=20)[18]:.1f} ms |")
        print("\n".join(lines))
    if ablations:
        print()
        print("Ablations (rank_memories, recency 0; each row turns off one thing):")
        print()
        print(table(ablations))
    if loo:
        result, chosen = loo
        print()
        print("Leave one conversation out (weights re-chosen on the other four):")
        print()
        print(table([("default weights", default), ("weights chosen without the conversation scored", result)]))
        print()
        for sample_id, changed in chosen:
            print(f"- scoring {sample_id}: chosen {changed or 'the defaults'}")


if __name__ == "__main__":
    main()
