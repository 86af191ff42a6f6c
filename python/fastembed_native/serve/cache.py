"""An in-memory LRU cache of embeddings, bounded in bytes.

Keys hold everything that changes a raw (pooled, not yet normalised or truncated) vector: the model,
the exact text the model sees (prompt included) and whether it was truncated. ``dimensions`` and
``normalize`` are applied after the cache, so requests that differ only there share entries.
Used from the event loop only, so it needs no lock.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

# Per-entry bookkeeping beyond the key's text and the vector: the OrderedDict node, the key tuple
# and the ndarray header (measured with sys.getsizeof on CPython 3.11, rounded up).
_ENTRY_OVERHEAD = 250


class EmbeddingCache:
    """LRU over ``key -> (float32 vector, token count)``, evicting the least recently used past
    ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[tuple[np.ndarray, int], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> tuple[np.ndarray, int] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: tuple[np.ndarray, int]) -> None:
        if key in self._entries:
            return
        vector, tokens = value
        size = vector.nbytes + _ENTRY_OVERHEAD + sum(sys.getsizeof(part) for part in _parts(key))
        if size > self.max_bytes:
            return
        self._entries[key] = ((vector.copy(), tokens), size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted


def _parts(key: Hashable) -> tuple[object, ...]:
    return key if isinstance(key, tuple) else (key,)
