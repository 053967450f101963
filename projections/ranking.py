"""Hybrid retrieval over one user's projections: BM25 (FTS5) and dense cosine, fused, then
weighed with the evidence around each candidate, and blended with recency.

1. Candidates: the BM25 top and the dense top (`RankingConfig.depth` each). BM25 reads each
   memory's own text and, at a lower weight, the text of the memory stored just before it in
   the same conversation (`projections.fulltext`); query words found in more than a fifth of the
   memories (or in more than 5,000) are left out of the match (little IDF, most of the cost), and
   BM25 walks at most `postings_budget` postings, so its cost does not grow with the log.
2. Relevance: each list min-max normalised, then weighted (0.6 BM25, 0.4 dense); a memory found
   by only one list gets 0 from the other.
3. Conversation: a memory gains a share of the relevance of its predecessor and its successor
   (the answer that follows a matching question, the question before a matching answer), and a
   share of the best relevance among candidates that happened within the same episode.
4. Query cues (`projections.query`): a memory that happened on a date the query names, a memory
   that says when something happened if the query asks "when", and a memory whose subject (its
   first word, as in "Alice: ..." or "Alice prefers ...", or its entity) the query names, rank
   higher.
5. Recency (half-life 30 days, on when the thing happened if known, else when it was last
   changed) is blended in with the caller's weight.

The weights were chosen on LoCoMo (bench/locomo.py) with a leave-one-conversation-out check;
they are round numbers and each one is an ablation row of that bench.
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
from projections.query import QueryCues, analyse, first_word, fts_query, mentions_time, query_words
from projections.vectors import VectorIndex

__all__ = ["Filters", "Ranked", "RankingConfig", "DEFAULT_CONFIG", "rank_memories", "fts_query", "filter_sql"]

HALF_LIFE_DAYS = 30.0
BM25_WEIGHT = 0.6
DENSE_WEIGHT = 0.4
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


DEFAULT_CONFIG = RankingConfig()


#: The filters are the domain's one definition of them; values arrive checked and normalised.
Filters = MemoryFilter


class Ranked(msgspec.Struct):
    memory_id: str
    score: float
    bm25: float | None
    dense: float | None


def filter_sql(f: Filters) -> tuple[str, list]:
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


_UNFILTERED = filter_sql(Filters())[0]


def _normalised(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high - low < 1e-9:
        return {k: 1.0 for k in scores}
    return {k: (v - low) / (high - low) for k, v in scores.items()}


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


def _match(db: sqlite3.Connection, words: Sequence[str], total: int,
           config: RankingConfig) -> tuple[str | None, int]:
    """The FTS5 expression and how many postings it may walk: the query's words, quoted (no FTS
    syntax gets through), OR-ed; the common ones left out (common among `total` memories), of a
    long query only the rarest, and no more words than `postings_budget` pays for."""
    if not words:
        return None, 0
    column = "text : " if config.context_column <= 0 else ""
    postings = 0
    if len(words) > 1:
        limit = min(config.common_word_share * total, config.max_postings)
        # Counted no further than a word can go and still be matched: a common word's count
        # would cost its whole posting list.
        cap = int(max(limit, config.postings_budget)) + 1
        counts = {w: db.execute("SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ? "
                                "LIMIT ?)", (f'{column}"{w}"', cap)).fetchone()[0] for w in words}
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
    else:
        postings = config.postings_budget + 1  # not counted: _lexical bounds it
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
    score = dict(relevance)
    if config.from_predecessor or config.from_successor:
        for prev, memory_id in neighbours(db, relevance):
            if prev in relevance:
                score[memory_id] = score.get(memory_id, 0.0) + config.from_predecessor * relevance[prev]
            if memory_id in relevance:
                score[prev] = score.get(prev, 0.0) + config.from_successor * relevance[memory_id]
    # The memories themselves: neighbours brought in above must pass the filters too.
    rows = db.execute(
        "SELECT m.id, m.text, m.entity, coalesce(m.occurred_at, m.created_at) FROM memories m "
        f"WHERE m.id IN (SELECT value FROM json_each(?)) AND {where}",
        (msgspec.json.encode(list(score)).decode(), *args),
    ).fetchall()
    score = {r[0]: score[r[0]] for r in rows}
    times = {r[0]: _at(r[3]) for r in rows}
    if config.episode:
        # Episodes: candidates that happened close together, split where CONTEXT_GAP passes
        # without one of them; each gains a share of the best relevance in its episode.
        timed = sorted((t, m) for m, t in times.items() if t is not None)
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
    for memory_id, text, entity, _ in rows:
        value = score[memory_id]
        at = times[memory_id]
        # A candidate's relevance may be 0 (the bottom of both lists): a date still counts.
        if windows and at is not None and any(a <= at < b for a, b in windows):
            value += config.date_match
        if value <= 0:
            continue
        if subjects and (first_word(text) in subjects
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


def rank_memories(
    db: sqlite3.Connection,
    index: VectorIndex,
    query: str,
    query_vector: np.ndarray | Callable[[], np.ndarray | None] | None,
    filters: Filters,
    limit: int,
    recency_weight: float,
    now: datetime,
    config: RankingConfig = DEFAULT_CONFIG,
) -> list[Ranked]:
    """`query_vector` may be a callable that waits for it: the query is then being embedded while
    the lexical half runs (both release the GIL, so the two overlap on two cores)."""
    where, args = filter_sql(filters)
    depth = max(config.depth, limit * 4)
    cues = analyse(query) if query else None
    # How many memories there are, for what counts as a common word: the vector index holds one
    # row per live memory (the ones the full-text index holds, give or take an embedding on its
    # way), and its size costs nothing where counting the table took 3.7 ms at 100k.
    total = len(index)
    match, postings = _match(db, query_words(query), total, config) if query and config.bm25_weight > 0 \
        else (None, 0)
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

    dense: dict[str, float] = {}
    if query_vector is not None:
        # The index holds only memories that are not deleted, so without filters nothing is masked.
        allowed = None
        if filters != Filters():
            allowed = {r[0] for r in db.execute(f"SELECT m.id FROM memories m WHERE {where}", args)}
        dense = dict(index.search(query_vector, depth, allowed))

    nb, nd = _normalised(bm25), _normalised(dense)
    relevance = {m: config.bm25_weight * nb.get(m, 0.0) + config.dense_weight * nd.get(m, 0.0)
                 for m in nb.keys() | nd.keys()}
    if not relevance:
        return []
    keep = max(limit * 3, limit + 20)
    fused = _with_evidence(db, relevance, cues, where, args, config, keep)
    if not fused:
        return []
    candidates = sorted(fused, key=lambda c: (-fused[c], c))[:keep]
    top = fused[candidates[0]] or 1.0
    if recency_weight > 0:
        marks = ", ".join("?" * len(candidates))
        stamps = dict(db.execute(
            f"SELECT id, coalesce(occurred_at, updated_at) FROM memories WHERE id IN ({marks})", candidates
        ))
        final = {
            c: (1 - recency_weight) * fused[c] / top
            + recency_weight * math.pow(0.5, _age_days(stamps.get(c), now) / HALF_LIFE_DAYS)
            for c in candidates
        }
    else:
        final = {c: fused[c] / top for c in candidates}
    ordered = sorted(candidates, key=lambda c: (-final[c], c))[:limit]
    return [Ranked(c, round(final[c], 6), bm25.get(c), dense.get(c)) for c in ordered]
