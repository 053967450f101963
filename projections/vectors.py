"""An in-memory matrix of one user's memory embeddings, for cosine search over every memory.

Each vector is kept as int8 with a scale of its own (its largest component over 127): a quarter of
float32's memory (38 MB instead of 154 MB at 100k memories) and a scan that reads a quarter of the
bytes. The scan converts 1,024 rows at a time to float32 in a buffer that stays in cache and takes
one matrix-vector product per block: 9 ms at 100k on one core where the float32 product, bound by
memory, took 17 ms; past 16k rows the blocks are shared with a thread per other core (6 ms on
two). A score is off the exact cosine by at most half a step per component (`error_bound`); for
MiniLM's unit vectors that is about 0.0006 typically and under 0.003 at worst, well inside what
separates a duplicate (0.93) from a merely similar memory (0.70).

Rows are appended in place and removed by swapping in the last row, so an update never copies the
matrix. A lock keeps a search (which runs outside the user's lock) from seeing a row half moved.
"""

import math
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["VectorIndex", "quantized"]

# Rows converted to float32 per block of the scan: 1.5 MB of buffer at 384 dimensions.
_BLOCK = 1024
# A scan of more rows than this is split between the calling thread and the other cores (numpy
# releases the GIL for the conversion and the product): 100k rows took 8.8 ms on one core. Under
# this the split costs more than it saves.
_SPLIT_ROWS = 16 * _BLOCK
_SCAN_HELPERS = max(0, (os.cpu_count() or 1) - 1)
_scan_pool = ThreadPoolExecutor(max_workers=_SCAN_HELPERS, thread_name_prefix="vector-scan") if _SCAN_HELPERS else None


def quantized(vector: np.ndarray) -> tuple[np.ndarray, float]:
    """int8 components and the scale that brings them back: `vector ~ components * scale`."""
    largest = float(np.abs(vector).max()) if len(vector) else 0.0
    scale = largest / 127 if largest > 0 else 1.0
    return np.rint(vector / scale).astype(np.int8), scale


class VectorIndex:
    def __init__(self, dimensions: int):
        self.dimensions = dimensions
        self._matrix = np.zeros((0, dimensions), dtype=np.int8)
        self._scales = np.zeros(0, dtype=np.float32)
        self._size = 0
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def __contains__(self, memory_id: str) -> bool:
        return memory_id in self._rows

    def upsert(self, memory_id: str, vector: np.ndarray) -> None:
        with self._lock:
            self._upsert(memory_id, vector)

    def _upsert(self, memory_id: str, vector: np.ndarray) -> None:
        row = self._rows.get(memory_id)
        if row is None:
            if self._size == len(self._matrix):
                capacity = max(64, 2 * self._size)
                grown = np.zeros((capacity, self.dimensions), dtype=np.int8)
                grown[: self._size] = self._matrix[: self._size]
                scales = np.zeros(capacity, dtype=np.float32)
                scales[: self._size] = self._scales[: self._size]
                self._matrix, self._scales = grown, scales
            row = self._size
            self._size += 1
            self._ids.append(memory_id)
            self._rows[memory_id] = row
        self._matrix[row], self._scales[row] = quantized(np.asarray(vector, dtype=np.float32))

    def remove(self, memory_id: str) -> None:
        with self._lock:
            self._remove(memory_id)

    def _remove(self, memory_id: str) -> None:
        row = self._rows.pop(memory_id, None)
        if row is None:
            return
        last = self._size - 1
        if row != last:
            moved = self._ids[last]
            self._matrix[row] = self._matrix[last]
            self._scales[row] = self._scales[last]
            self._ids[row] = moved
            self._rows[moved] = row
        self._ids.pop()
        self._size -= 1

    def load(self, rows: Iterable[tuple[str, np.ndarray]], capacity: int) -> None:
        """Fill an empty index, allocating room for `capacity` rows once."""
        with self._lock:
            self._matrix = np.zeros((max(64, capacity), self.dimensions), dtype=np.int8)
            self._scales = np.zeros(max(64, capacity), dtype=np.float32)
            for memory_id, vector in rows:
                self._upsert(memory_id, vector)

    def clear(self) -> None:
        with self._lock:
            self._matrix = np.zeros((0, self.dimensions), dtype=np.int8)
            self._scales = np.zeros(0, dtype=np.float32)
            self._size = 0
            self._ids = []
            self._rows = {}

    def search(self, query: np.ndarray, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """The k most similar memory ids with their cosine similarity (vectors are normalised),
        each within `error_bound(query)` of the exact one."""
        with self._lock:
            if self._size == 0 or k <= 0:
                return []
            scores = self._scan(query.astype(np.float32, copy=False))
            if allowed is not None:
                mask = np.zeros(self._size, dtype=bool)
                mask[[row for memory_id in allowed if (row := self._rows.get(memory_id)) is not None]] = True
                scores = np.where(mask, scores, -np.inf)
            k = min(k, self._size)
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top])]
            # As Python lists in one step each: indexing numpy scalars one by one cost 0.5 ms for
            # 200 candidates, a sixth of the dense half at 10k.
            found = scores[top]
            ids = self._ids
            return [(ids[i], s) for i, s in zip(top.tolist(), found.tolist(), strict=True) if math.isfinite(s)]

    def _scan(self, query: np.ndarray) -> np.ndarray:
        scores = np.empty(self._size, dtype=np.float32)
        parts = 1 + _SCAN_HELPERS if self._size > _SPLIT_ROWS and _scan_pool is not None else 1
        # Whole blocks per part; the caller holds the lock until every part is done.
        share = -(-self._size // (parts * _BLOCK)) * _BLOCK
        bounds = [(start, min(start + share, self._size)) for start in range(0, self._size, share)]
        helpers = [_scan_pool.submit(self._scan_rows, query, scores, *part) for part in bounds[1:]]
        self._scan_rows(query, scores, *bounds[0])
        for helper in helpers:
            helper.result()
        scores *= self._scales[: self._size]
        return scores

    def _scan_rows(self, query: np.ndarray, scores: np.ndarray, first: int, end: int) -> None:
        block = np.empty((min(_BLOCK, end - first), self.dimensions), dtype=np.float32)
        for start in range(first, end, _BLOCK):
            rows = self._matrix[start: min(start + _BLOCK, end)]
            converted = block[: len(rows)]
            np.copyto(converted, rows, casting="unsafe")
            np.dot(converted, query, out=scores[start: start + len(rows)])

    def error_bound(self, query: np.ndarray) -> float:
        """How far a score of `search` can be from the exact cosine: half a step of the coarsest
        row, in every component, against the query."""
        with self._lock:
            coarsest = float(self._scales[: self._size].max()) if self._size else 0.0
        return coarsest / 2 * float(np.abs(query).sum())
