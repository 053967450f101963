"""Recently asked queries and their vectors, so a query asked again skips the model.

Assistants repeat themselves: the same `search` before and after a `fetch`, the same context
question at the start of each turn. The model call is the largest single cost of a retrieval
(4-5 ms on one core), and a cached vector costs a dict lookup.

Entries are kept per owner (a user key) and per model: one person's query never answers
another's (no timing tells anyone what someone else asked), and a change of model can never
serve an old vector. The cache holds query text, which erasure must reach: `forget_owner`
drops every entry of a person, and the service calls it on each `forget` (rare, so the cost of
re-embedding their next few queries does not matter).
"""

import threading
from collections import OrderedDict

import numpy as np

from projections.embedder import Embedder

__all__ = ["QueryVectorCache"]


class QueryVectorCache:
    """A thread-safe LRU of (owner, model id, query text) -> read-only unit vector."""

    def __init__(self, embedder: Embedder, capacity: int = 1024):
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, got {capacity}")
        self.embedder = embedder
        # 1,024 entries of 384 float32: 1.5 MB, and a few MB of text at the 4 KB query limit.
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def vector(self, owner: str, text: str) -> np.ndarray:
        """The query's vector, from the cache or the model (then remembered)."""
        key = (owner, self.embedder.model_id, text)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                return cached
        # Outside the lock: two threads missing the same query both embed it, which is rarer and
        # cheaper than making every miss queue behind another's model call.
        vector = self.embedder.embed_query(text)
        vector.setflags(write=False)  # shared between callers: nobody may change it in place
        if self.capacity:
            with self._lock:
                self._entries[key] = vector
                self._entries.move_to_end(key)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return vector

    def forget_owner(self, owner: str) -> None:
        """Drop every query of this owner (erasure: none of their texts may stay here)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == owner]:
                del self._entries[key]
