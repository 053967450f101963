"""How the two halves of retrieval are combined, and how sure the result is.

- **Fusion.** Each list (BM25 scores, dense cosines of the top candidates) is standardised over its
  own candidates (z-scores) before the two are added. A list whose best candidates stand out from
  the rest then speaks loudly, and a list of near-equal scores (BM25 matching one incidental word
  in many memories, or the dense half finding nothing in particular) adds little spread: the weight
  each half gets adapts to the query without a tuned per-set constant. Min-max normalisation, the
  previous rule, stretches any list to [0, 1], so a weak BM25 list counted as much as a sharp one
  (measured on bench/data/preferences.jsonl: it cost the dense half recall where words don't
  overlap). The fused value is scaled to [0, 1] so the evidence that follows adds on a fixed scale.
- **Confidence** (the relevance floor's scale): an absolute score of the best candidate, not a
  normalised one: its cosine plus `coverage_weight` × BM25 coverage (its BM25 score over the sum
  of the query words' IDF: about the IDF-weighted share of the query it contains), less
  `unknown_name_penalty` when the query names something (a capitalised word inside the query)
  that no memory contains: a question about a person the user never mentioned is about nothing
  stored. A query whose confidence is under the floor finds nothing.
"""

import math
import re
from collections.abc import Mapping

import numpy as np

__all__ = ["fuse", "coverage", "unknown_names", "confidence"]

_WORD = re.compile(r"\w+", re.UNICODE)
# Words that are capitalised by rule, not because they name something.
_CALENDAR = frozenset(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday".split())
# "in London", "to Lisbon": a place the question is set in, not what it is about.
_PLACE_WORDS = frozenset("in to from at across around near via into through".split())


def _standardised(scores: Mapping[str, float]) -> dict[str, float]:
    if len(scores) < 2:
        return {k: 1.0 for k in scores}
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    spread = float(values.std()) or 1.0
    mean = float(values.mean())
    return {k: (v - mean) / spread for k, v in scores.items()}


def _minmax(scores: Mapping[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high - low < 1e-9:
        return {k: 1.0 for k in scores}
    return {k: (v - low) / (high - low) for k, v in scores.items()}


def fuse(bm25: Mapping[str, float], dense: Mapping[str, float], bm25_weight: float, dense_weight: float,
         method: str = "zscore") -> dict[str, float]:
    """Each candidate's relevance in [0, 1]; a candidate missing from a list gets that list's lowest."""
    if method == "minmax":
        nb, nd = _minmax(bm25), _minmax(dense)
        return {m: bm25_weight * nb.get(m, 0.0) + dense_weight * nd.get(m, 0.0) for m in bm25.keys() | dense.keys()}
    zb, zd = _standardised(bm25), _standardised(dense)
    low_b = min(zb.values(), default=0.0)
    low_d = min(zd.values(), default=0.0)
    fused = {m: bm25_weight * zb.get(m, low_b) + dense_weight * zd.get(m, low_d) for m in bm25.keys() | dense.keys()}
    return _minmax(fused)


def coverage(bm25: Mapping[str, float], counts: Mapping[str, int], total: int) -> dict[str, float]:
    """BM25 over the sum of the query words' IDF (FTS5's own IDF): 1.0 for a memory that holds every
    word of the query once at average length; comparable across queries, unlike the raw score."""
    # `total` is the vector index's size, which an embedding on its way may leave under a count.
    idf = sum(max(1e-6, math.log((max(total - n, 0) + 0.5) / (n + 0.5))) for n in counts.values())
    if idf <= 0:
        return {}
    return {m: s / idf for m, s in bm25.items()}


def unknown_names(query: str, counts: Mapping[str, int]) -> list[str]:
    """Capitalised words inside the query (not its first word, not an acronym, not a month or a
    day, not right after "in", "to"...) that no memory contains."""
    words = _WORD.findall(query)
    found = []
    for i in range(1, len(words)):
        word = words[i]
        if (len(word) < 3 or not word[0].isupper() or word.isupper() or word.lower() in _CALENDAR
                or words[i - 1].lower() in _PLACE_WORDS):
            continue
        if counts.get(word.lower()) == 0:
            found.append(word)
    return found


def confidence(bm25_coverage: Mapping[str, float], dense: Mapping[str, float], coverage_weight: float,
               unknown: bool, unknown_name_penalty: float) -> float:
    """The best candidate's absolute score (see the module's docstring)."""
    best = max((dense.get(m, 0.0) + coverage_weight * bm25_coverage.get(m, 0.0)
                for m in bm25_coverage.keys() | dense.keys()), default=0.0)
    return best - (unknown_name_penalty if unknown else 0.0)
