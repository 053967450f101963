"""Hybrid retrieval over one user's projections: BM25 (FTS5) and dense cosine, fused, then
weighed with the evidence around each candidate, and blended with recency.

1. Candidates: the BM25 top and the dense top (`RankingConfig.depth` each). BM25 reads each
   memory's own text and, at a lower weight, the text of the memory stored just before it in
   the same conversation (`projections.fulltext`); query words found in more than a fifth of the
   memories (or in more than 5,000) are left out of the match (little IDF, most of the cost), and
   BM25 walks at most `postings_budget` postings, so its cost does not grow with the log.
2. Relevance: each list standardised over its candidates (z-scores) and added, equal weights, then
   scaled to [0, 1] (`projections.fusion`): a half whose best candidates stand out counts more.
   The query's confidence (its best memory's absolute score) is computed beside it; under
   `RankingConfig.floor` the query finds nothing.
3. Conversation: between memories that happened (`occurred_at` set: turns, events, not facts an
   assistant wrote down), a memory gains a share of the relevance of its predecessor and its
   successor (the answer that follows a matching question, the question before a matching
   answer), and a share of the best relevance among candidates that happened within the same
   episode.
4. Query cues (`projections.query`): a memory that happened on a date the query names, a memory
   that says when something happened if the query asks "when", and a memory whose subject (its
   speaker, as in "Alice: ...", or its entity) the query names, rank higher.
5. Recency (half-life 30 days, on when the thing happened if known, else when it was last
   changed) is blended in with the caller's weight.

Each weight is an ablation row of bench/retrieval_eval.py, measured on LoCoMo and on the two sets
of another shape in bench/data; a feature that helped LoCoMo only is gated (3, 4) so it is
neutral there.
"""

import functools
import math
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np

from memory.commands import MemoryFilter
from projections.fulltext import CONTEXT_GAP, neighbours
from projections.fusion import confidence, coverage, fuse, unknown_names
from projections.query import QueryCues, analyse, fts_query, mentions_time, query_words, speaker
from projections.vectors import VectorIndex

__all__ = ["Ranked", "RankingConfig", "DEFAULT_CONFIG", "rank_memories", "fts_query", "filter_sql"]

HALF_LIFE_DAYS = 30.0
# Dense candidates fetched before the filters, per one kept (`_dense`).
_OVERFETCH = 4
BM25_WEIGHT = 1.0
DENSE_WEIGHT = 1.0
# A date the query names matches a memory a little beyond that day: time zones.
_DATE_SLACK = timedelta(hours=12)


class RankingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The weights of each kind of evidence; `DEFAULT_CONFIG` is what the service uses. A weight of
    0 (a factor of 1) turns that evidence off, which is how the bench measures each one."""

    depth: int = 50  # candidates taken from each list
    bm25_weight: float = BM25_WEIGHT
    dense_weight: float = DENSE_WEIGHT
    context_column: float = 0.4  # BM25 weight of the predecessor's text (own text: 1)
    from_predecessor: float = 0.3
    from_successor: float = 0.3
    episode: float = 0.4  # share of the best relevance in the same episode
    date_match: float = 1.0  # added when the memory happened on a date the query names
    time_answer: float = 0.5  # added when the query asks "when" and the memory says when
    subject_factor: float = 2.0  # multiplies the score when the query names the memory's subject
    # A query word in more than this share of the memories is left out of the BM25 match (unless
    # every word is that common): its IDF says little, and scoring its long posting list is most
    # of the cost of the query.
    common_word_share: float = 0.2
    # ... and so is a word in more than this many memories, however large the log: scoring a
    # posting list costs its length, and past a few thousand the word adds little (measured on
    # a 100k log: BM25 p50 33 -> 5 ms). Logs under 25k memories never reach it.
    max_postings: int = 5000
    max_words: int = 8  # of a longer query only the rarest words are matched (the cost grows with each)
    # BM25 scores every memory that holds a matched word, so its cost is the postings it walks: at
    # most this many. Words are taken rarest first while their postings fit (the rarest always),
    # and a match that still holds more memories is scored among its newest `postings_budget`
    # only (dense search still sees them all). Measured at 10k memories where every word is in
    # 45% of them: BM25 21 -> 1.5 ms. Logs of a few hundred memories never reach it.
    postings_budget: int = 2000
    # How the two lists are combined (`projections.fusion`): "zscore" (adaptive) or "minmax".
    fusion: str = "zscore"
    # The confidence of a query (`projections.fusion.confidence`), and the floor under which the
    # query finds nothing: chosen on LoCoMo, preferences and facts together for recall within
    # 0.01 and the most empty answers to foreign questions (bench/retrieval_eval.py --floor). On
    # the embedding model's cosine scale: a new model needs it chosen again.
    coverage_weight: float = 0.25
    unknown_name_penalty: float = 0.4
    floor: float = 0.18


DEFAULT_CONFIG = RankingConfig()


class Ranked(msgspec.Struct):
    memory_id: str
    score: float
    bm25: float | None
    dense: float | None


def filter_sql(f: MemoryFilter) -> tuple[str, list]:
    """A WHERE clause over `memories m` for the filters."""
    clauses: list[str] = ["m.deleted = 0"]
    args: list = []
    if not (f.include_superseded or f.status):
        clauses.append("(m.status IS NULL OR m.status != 'superseded')")
    if f.memory_types:
        clauses.append(f"m.memory_type IN ({', '.join('?' * len(f.memory_types))})")
        args += f.memory_types
    if f.scope:
        clauses.append("m.scope = ?")
        args.append(f.scope)
    if f.project:
        # A project's context includes what holds everywhere.
        clauses.append("(m.project = ? OR m.scope = 'global')")
        args.append(f.project)
        if not f.status:
            clauses.append("(m.memory_type != 'project_context' OR m.status IS NULL OR m.status = 'active')")
    if f.task_id:
        clauses.append("m.task_id = ?")
        args.append(f.task_id)
    if f.entity:
        # The entity itself or a descendant, compared exactly (LIKE would ignore ASCII case).
        clauses.append("(m.entity = ? OR substr(m.entity, 1, ?) = ?)")
        args += [f.entity, len(f.entity) + 1, f.entity + "."]
    if f.tags:
        clauses.append(f"EXISTS (SELECT 1 FROM json_each(m.tags) t WHERE t.value IN ({', '.join('?' * len(f.tags))}))")
        args += f.tags
    if f.status:
        clauses.append("m.status = ?")
        args.append(f.status)
    return " AND ".join(clauses), args


_UNFILTERED = filter_sql(MemoryFilter())[0]


def _age_days(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return 0.0
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - when).total_seconds() / 86400)


@functools.lru_cache(maxsize=4096)
def _at(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo else when.replace(tzinfo=UTC).timestamp()


def _counts(db: sqlite3.Connection, words: Sequence[str], total: int,
            config: RankingConfig) -> dict[str, int]:
    """How many memories hold each word (as the match will read it), counted no further than a
    word can go and still be matched: a common word's full count would cost its whole posting list."""
    column = "text : " if config.context_column <= 0 else ""
    limit = min(config.common_word_share * total, config.max_postings)
    cap = int(max(limit, config.postings_budget)) + 1
    return {w: db.execute("SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)",
                          (f'{column}"{w}"', cap)).fetchone()[0] for w in words}


def _match(words: Sequence[str], counts: dict[str, int], total: int,
           config: RankingConfig) -> tuple[str | None, int]:
    """The FTS5 expression and how many postings it may walk: the query's words, quoted (no FTS
    syntax gets through), OR-ed; the common ones left out (common among `total` memories), of a
    long query only the rarest, and no more words than `postings_budget` pays for."""
    if not words:
        return None, 0
    column = "text : " if config.context_column <= 0 else ""
    postings = counts.get(words[0], 0) if len(words) == 1 else 0
    if len(words) > 1:
        limit = min(config.common_word_share * total, config.max_postings)
        rare = [w for w in words if counts[w] <= limit]
        if not rare:
            # Every word is common: all of them on a small log, only the rarest on a large one.
            rare = list(words) if config.common_word_share * total <= config.max_postings \
                else [min(words, key=lambda w: counts[w])]
        chosen: list[str] = []
        for w in sorted(rare, key=lambda w: (counts[w], words.index(w)))[: config.max_words]:
            if chosen and postings + counts[w] > config.postings_budget:
                break
            chosen.append(w)
            postings += counts[w]
        words = chosen
    match = " OR ".join(f'"{w}"' for w in words)
    return (f"text : ({match})" if column else match), postings


def _lexical(db: sqlite3.Connection, match: str, postings: int, where: str, args: list, depth: int,
             config: RankingConfig) -> dict[str, float]:
    rank = f"bm25(memories_fts, 0.0, 1.0, {float(config.context_column)!r})"
    # Past the budget, only the newest matches are scored: rowids are seqs, and FTS5 walks a
    # posting list backwards from the end without scoring (0.1-0.5 ms for 2,000 rows).
    floor = None
    if postings > config.postings_budget:
        row = db.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? ORDER BY rowid DESC "
                         "LIMIT 1 OFFSET ?", (match, config.postings_budget - 1)).fetchone()
        floor = row[0] if row else None
    newest = "" if floor is None else f" AND {'f.' if where != _UNFILTERED else ''}rowid >= {int(floor)}"
    if where == _UNFILTERED:
        # No filter: the index holds only memories that are not deleted, so it answers alone (and
        # faster); a superseded one among them is dropped with the other filters (_with_evidence).
        sql = (f"SELECT memory_id, -{rank} FROM memories_fts WHERE memories_fts MATCH ?{newest} "
               f"ORDER BY {rank} LIMIT ?")
        return dict(db.execute(sql, (match, depth)).fetchall())
    rows = db.execute(
        f"SELECT f.memory_id, -{rank} FROM memories_fts f JOIN memories m ON m.id = f.memory_id "
        f"WHERE memories_fts MATCH ?{newest} AND {where} ORDER BY {rank} LIMIT ?",
        (match, *args, depth),
    ).fetchall()
    return dict(rows)


def _with_evidence(db: sqlite3.Connection, relevance: dict[str, float], cues: QueryCues | None,
                   where: str, args: list, config: RankingConfig, keep: int) -> dict[str, float]:
    """Relevance plus what the conversation around each memory and the query's cues add; exact for
    the best `keep`."""
    pairs = neighbours(db, relevance) if config.from_predecessor or config.from_successor else []
    # The memories themselves: neighbours brought in below must pass the filters too.
    ids = set(relevance).union(*pairs)
    rows = db.execute(
        "SELECT m.id, m.text, m.entity, m.occurred_at, coalesce(m.occurred_at, m.created_at) FROM memories m "
        f"WHERE m.id IN (SELECT value FROM json_each(?)) AND {where}",
        (msgspec.json.encode(list(ids)).decode(), *args),
    ).fetchall()
    # Conversation evidence holds between things that happened (turns, events: `occurred_at`), not
    # between facts an assistant wrote down one after another, which are unrelated to each other
    # (measured on bench/data: propagating there cost R@5 0.02-0.06).
    times = {r[0]: _at(r[3]) for r in rows}
    score = {r[0]: relevance.get(r[0], 0.0) for r in rows}
    for prev, memory_id in pairs:
        if times.get(prev) is None or times.get(memory_id) is None:
            continue
        if prev in relevance:
            score[memory_id] += config.from_predecessor * relevance[prev]
        if memory_id in relevance:
            score[prev] += config.from_successor * relevance[memory_id]
    score = {m: v for m, v in score.items() if m in relevance or v > 0}
    if config.episode:
        # Episodes: candidates that happened close together, split where CONTEXT_GAP passes
        # without one of them; each gains a share of the best relevance in its episode.
        timed = sorted((t, m) for m, t in times.items() if t is not None and m in score)
        gap = CONTEXT_GAP.total_seconds()
        start = 0
        for i in range(1, len(timed) + 1):
            if i == len(timed) or timed[i][0] - timed[i - 1][0] > gap:
                members = [m for _, m in timed[start:i]]
                best = config.episode * max(relevance.get(m, 0.0) for m in members)
                for m in members:
                    if score[m] > 0:
                        score[m] += best
                start = i
    if cues is None:
        return score
    slack = _DATE_SLACK.total_seconds()
    windows = [(a.timestamp() - slack, b.timestamp() + slack) for a, b in cues.dates] if config.date_match else []
    subjects = cues.words if config.subject_factor != 1 else frozenset()
    asks_when = cues.asks_when and config.time_answer
    if not (windows or subjects or asks_when):
        return score
    texts = {}
    for memory_id, text, entity, _, stamp in rows:
        if memory_id not in score:
            continue
        value = score[memory_id]
        at = _at(stamp)
        # A candidate's relevance may be 0 (the bottom of both lists): a date still counts.
        if windows and at is not None and any(a <= at < b for a, b in windows):
            value += config.date_match
        if value <= 0:
            continue
        if subjects and (speaker(text) in subjects
                         or (entity is not None and not subjects.isdisjoint(entity.lower().split(".")))):
            value *= config.subject_factor
        score[memory_id] = value
        texts[memory_id] = text
    if asks_when and texts:
        # Only a memory that the bonus could lift into the top `keep` is worth the regex.
        ranked = sorted(score.values(), reverse=True)
        floor = ranked[min(keep, len(ranked)) - 1] - config.time_answer
        for memory_id, text in texts.items():
            if score[memory_id] >= floor and mentions_time(text):
                score[memory_id] += config.time_answer
    return score


def _dense(db: sqlite3.Connection, index: VectorIndex, query_vector: np.ndarray, depth: int, where: str,
           args: list) -> dict[str, float]:
    """The `depth` memories nearest the query among those the filters allow, exactly. The nearest
    few times `depth` are taken unmasked and checked against the filters' SQL; if `depth` of them
    pass they are the answer (anything allowed and nearer would be among them). Only a narrow
    filter falls back to masking the whole index, whose id set cost 8 ms a query at 10k."""
    wide = index.search(query_vector, depth * _OVERFETCH)
    passing = {r[0] for r in db.execute(
        f"SELECT m.id FROM memories m WHERE m.id IN (SELECT value FROM json_each(?)) AND {where}",
        (msgspec.json.encode([m for m, _ in wide]).decode(), *args))}
    kept = [(m, score) for m, score in wide if m in passing][:depth]
    if len(kept) >= depth or len(wide) < depth * _OVERFETCH:  # enough, or the whole index was seen
        return dict(kept)
    allowed = {r[0] for r in db.execute(f"SELECT m.id FROM memories m WHERE {where}", args)}
    return dict(index.search(query_vector, depth, allowed))


def rank_memories(
    db: sqlite3.Connection,
    index: VectorIndex,
    query: str,
    query_vector: np.ndarray | Callable[[], np.ndarray | None] | None,
    filters: MemoryFilter,
    limit: int,
    recency_weight: float,
    now: datetime,
    config: RankingConfig = DEFAULT_CONFIG,
    floor: float | None = None,
) -> list[Ranked]:
    """`query_vector` may be a callable that waits for it: the query is then being embedded while
    the lexical half runs (both release the GIL, so the two overlap on two cores). A query whose
    confidence (`projections.fusion.confidence`) is under `floor` (default `config.floor`) finds
    nothing; a score is that confidence times the memory's share of the best ranking score."""
    where, args = filter_sql(filters)
    depth = max(config.depth, limit * 4)
    cues = analyse(query) if query else None
    words = query_words(query) if query else []
    # How many memories there are, for what counts as a common word: the vector index holds one
    # row per live memory (the ones the full-text index holds, give or take an embedding on its
    # way), and its size costs nothing where counting the table took 3.7 ms at 100k.
    total = len(index)
    counts = _counts(db, words, total, config) if words else {}
    match, postings = _match(words, counts, total, config) if config.bm25_weight > 0 else (None, 0)
    bm25 = _lexical(db, match, postings, where, args, depth, config) if match is not None else {}
    if callable(query_vector):
        query_vector = query_vector()
    if config.dense_weight <= 0:
        query_vector = None
    if match is None and query_vector is None:
        rows = db.execute(
            f"SELECT m.id FROM memories m WHERE {where} ORDER BY m.updated_seq DESC LIMIT ?", (*args, limit)
        ).fetchall()
        return [Ranked(r[0], 1.0, None, None) for r in rows]

    dense = _dense(db, index, query_vector, depth, where, args) if query_vector is not None else {}

    relevance = fuse(bm25, dense, config.bm25_weight, config.dense_weight, config.fusion)
    if not relevance:
        return []
    sure = confidence(coverage(bm25, counts, total), dense, config.coverage_weight,
                      bool(unknown_names(query, counts)), config.unknown_name_penalty)
    # The floor is on the query's confidence, the best memory's absolute score: a query that clears
    # it gets its k memories (cutting each memory at the floor cost preferences R@10 0.13: the
    # answer is often found at rank 6-10 with a low share of the best score), one that does not
    # gets none. Scores are on that scale: the confidence times each memory's share of the best.
    scale = max(sure, 0.0)
    if scale < (config.floor if floor is None else floor):
        return []
    keep = max(limit * 3, limit + 20)
    fused = _with_evidence(db, relevance, cues, where, args, config, keep)
    if not fused:
        return []
    candidates = sorted(fused, key=lambda c: (-fused[c], c))[:keep]
    top = fused[candidates[0]] or 1.0
    final = {c: fused[c] / top for c in candidates}
    if recency_weight > 0:
        marks = ", ".join("?" * len(candidates))
        stamps = dict(db.execute(
            f"SELECT id, coalesce(occurred_at, updated_at) FROM memories WHERE id IN ({marks})", candidates
        ))
        final = {
            c: (1 - recency_weight) * final[c]
            + recency_weight * math.pow(0.5, _age_days(stamps.get(c), now) / HALF_LIFE_DAYS)
            for c in candidates
        }
    ordered = sorted(candidates, key=lambda c: (-final[c], c))[:limit]
    return [Ranked(c, round(scale * final[c], 6), bm25.get(c), dense.get(c)) for c in ordered]
