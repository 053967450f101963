"""Hybrid retrieval over one user's projections: BM25 (FTS5) and dense cosine, fused, then
blended with recency.

Each list is cut to a candidate depth, each score is min-max normalised within its list, and the
two are combined with weights; a memory found by only one list gets 0 from the other. Recency
(half-life 30 days, on when the thing happened if known, else when it was last changed) is then
blended in with the caller's weight.
"""

import math
import re
import sqlite3
from collections.abc import Sequence
from datetime import datetime

import msgspec
import numpy as np

from projections.vectors import VectorIndex

__all__ = ["Filters", "Ranked", "rank_memories", "fts_query", "filter_sql"]

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her hers him his
    how i if in into is it its me my of on or our she so than that the their them then there these they
    this to was we were what when where which who whom why will with would you your""".split()
)
HALF_LIFE_DAYS = 30.0
BM25_WEIGHT = 0.6
DENSE_WEIGHT = 0.4


class Filters(msgspec.Struct, kw_only=True):
    memory_types: list[str] | None = None
    scope: str | None = None
    project: str | None = None
    task_id: str | None = None
    entity: str | None = None
    tags: list[str] | None = None
    status: str | None = None


class Ranked(msgspec.Struct):
    memory_id: str
    score: float
    bm25: float | None
    dense: float | None


def fts_query(text: str) -> str | None:
    """Words of the query, stop words dropped, each quoted (no FTS syntax gets through), OR-ed."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS]
    if not words:
        words = _WORD.findall(text.lower())
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def filter_sql(f: Filters) -> tuple[str, list]:
    """A WHERE clause over `memories m` for the filters."""
    clauses: list[str] = ["m.deleted = 0"]
    args: list = []
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
        clauses.append("(m.entity = ? OR m.entity LIKE ? ESCAPE '\\')")
        escaped = f.entity.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args += [f.entity, escaped + ".%"]
    if f.tags:
        clauses.append(f"EXISTS (SELECT 1 FROM json_each(m.tags) t WHERE t.value IN ({', '.join('?' * len(f.tags))}))")
        args += f.tags
    if f.status:
        clauses.append("m.status = ?")
        args.append(f.status)
    return " AND ".join(clauses), args


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


def rank_memories(
    db: sqlite3.Connection,
    index: VectorIndex,
    query: str,
    query_vector: np.ndarray | None,
    filters: Filters,
    limit: int,
    recency_weight: float,
    now: datetime,
) -> list[Ranked]:
    where, args = filter_sql(filters)
    depth = max(50, limit * 4)
    match = fts_query(query) if query else None
    if match is None and query_vector is None:
        rows = db.execute(
            f"SELECT m.id FROM memories m WHERE {where} ORDER BY m.updated_seq DESC LIMIT ?", (*args, limit)
        ).fetchall()
        return [Ranked(r[0], 1.0, None, None) for r in rows]

    bm25: dict[str, float] = {}
    if match is not None:
        rows = db.execute(
            "SELECT f.memory_id, -bm25(memories_fts) FROM memories_fts f JOIN memories m ON m.id = f.memory_id "
            f"WHERE memories_fts MATCH ? AND {where} ORDER BY bm25(memories_fts) LIMIT ?",
            (match, *args, depth),
        ).fetchall()
        bm25 = dict(rows)

    dense: dict[str, float] = {}
    if query_vector is not None:
        # The index holds only memories that are not deleted, so without filters nothing is masked.
        allowed = None
        if filters != Filters():
            allowed = {r[0] for r in db.execute(f"SELECT m.id FROM memories m WHERE {where}", args)}
        dense = dict(index.search(query_vector, depth, allowed))

    nb, nd = _normalised(bm25), _normalised(dense)
    fused = {m: BM25_WEIGHT * nb.get(m, 0.0) + DENSE_WEIGHT * nd.get(m, 0.0) for m in nb.keys() | nd.keys()}
    if not fused:
        return []
    candidates = sorted(fused, key=fused.__getitem__, reverse=True)[: max(limit * 3, limit + 20)]
    if recency_weight > 0:
        marks = ", ".join("?" * len(candidates))
        stamps = dict(db.execute(
            f"SELECT id, coalesce(occurred_at, updated_at) FROM memories WHERE id IN ({marks})", candidates
        ))
        top = max(fused[c] for c in candidates) or 1.0
        final = {
            c: (1 - recency_weight) * fused[c] / top
            + recency_weight * math.pow(0.5, _age_days(stamps.get(c), now) / HALF_LIFE_DAYS)
            for c in candidates
        }
    else:
        final = {c: fused[c] for c in candidates}
    ordered = sorted(candidates, key=lambda c: (-final[c], c))[:limit]
    return [Ranked(c, round(final[c], 6), bm25.get(c), dense.get(c)) for c in ordered]

