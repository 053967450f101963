"""An in-memory matrix of one user's memory embeddings, for exact cosine search.

Exact search over a contiguous float32 matrix is one matrix-vector product: about a millisecond
per 10k memories on one core, with no index to build or rebuild. Rows are appended in place and
removed by swapping in the last row, so an update never copies the matrix. A lock keeps a
search (which runs outside the user's lock) from seeing a row half moved.
"""

import threading
from collections.abc import Iterable

import numpy as np

__all__ = ["VectorIndex"]


class VectorIndex:
    def __init__(self, dimensions: int):
        self.dimensions = dimensions
        self._matrix = np.zeros((0, dimensions), dtype=np.float32)
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
                grown = np.zeros((max(64, 2 * self._size), self.dimensions), dtype=np.float32)
                grown[: self._size] = self._matrix[: self._size]
                self._matrix = grown
            row = self._size
            self._size += 1
            self._ids.append(memory_id)
            self._rows[memory_id] = row
        self._matrix[row] = vector

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
            self._ids[row] = moved
            self._rows[moved] = row
        self._ids.pop()
        self._size -= 1

    def load(self, rows: Iterable[tuple[str, np.ndarray]], capacity: int) -> None:
        """Fill an empty index, allocating room for `capacity` rows once."""
        with self._lock:
            self._matrix = np.zeros((max(64, capacity), self.dimensions), dtype=np.float32)
            for memory_id, vector in rows:
                self._upsert(memory_id, vector)

    def clear(self) -> None:
        with self._lock:
            self._matrix = np.zeros((0, self.dimensions), dtype=np.float32)
            self._size = 0
            self._ids = []
            self._rows = {}

    def search(self, query: np.ndarray, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """The k most similar memory ids with their cosine similarity (vectors are normalised)."""
        with self._lock:
            if self._size == 0 or k <= 0:
                return []
            scores = self._matrix[: self._size] @ query.astype(np.float32, copy=False)
            if allowed is not None:
                mask = np.zeros(self._size, dtype=bool)
                mask[[row for memory_id in allowed if (row := self._rows.get(memory_id)) is not None]] = True
                scores = np.where(mask, scores, -np.inf)
            k = min(k, self._size)
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top])]
            return [(self._ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]
