"""A small per-worker cache of embeddings in front of the central embedding service.

The embedder's LRU cache already spares the model a phrase it has seen, but every text still
costs the router a gRPC round trip (serialise, send, wait, parse), which is most of the router's
CPU per single-text request. The phrases that repeat most (the head of the usual Zipf-like
traffic) are kept here as well, so they never leave the worker.

Keyed by a 16-byte digest of (scope, embedding id, text as the client sent it; the id names
the model and the feature set, embedder/features.py): the scope
is the tenant unless the operator shares caches (API_SHARE_EMBEDDING_CACHE), so a tenant never
gets a hit, nor a hit's latency, from another tenant's text. The key's size does not depend on
the text, so memory is bounded in bytes: at most `max_entries` entries of `entry_bytes(dim)`
each (`max_bytes`), whatever the texts' length. Vectors are stored only from an answer of the
model the head was trained with, and copied out of the batch array, so a cached row never keeps
a whole response alive.
"""

from __future__ import annotations

import threading

import numpy as np
from cachetools import LRUCache

from embedder.cache import cache_key

# Per entry besides the vector's float32 data: the key (a 16-byte bytes object), the array
# header, and the LRU's two dict slots and order node (tests/api/test_embedding_cache.py
# measures the real figure with tracemalloc and holds it below this).
ENTRY_OVERHEAD_BYTES = 512


def entry_bytes(dim: int) -> int:
    """Upper bound of the memory one cached vector of `dim` floats costs, key included."""
    return 4 * dim + ENTRY_OVERHEAD_BYTES


class RouterEmbeddingCache:
    def __init__(self, max_entries: int):
        self._entries: LRUCache = LRUCache(maxsize=max_entries)
        self._lowercase: dict[str, bool] = {}  # model id -> whether its normalisation lower-cases
        self._lock = threading.Lock()  # gthread workers share the cache between threads

    def __len__(self) -> int:
        return len(self._entries)

    def max_bytes(self, dim: int) -> int:
        """The most memory the entries can take for vectors of `dim` floats."""
        return int(self._entries.maxsize) * entry_bytes(dim)

    def lookup(self, model_id: str, texts: list[str], *, scope: str) -> list[np.ndarray | None]:
        keys = [cache_key(model_id, text, scope=scope) for text in texts]
        with self._lock:
            return [self._entries.get(key) for key in keys]

    def lowercase(self, model_id: str) -> bool:
        return self._lowercase.get(model_id, False)

    def store(self, model_id: str, texts: list[str], vectors: np.ndarray, *, scope: str, lowercase: bool) -> None:
        keys = [cache_key(model_id, text, scope=scope) for text in texts]
        rows = [row.copy() for row in vectors]
        for row in rows:
            row.setflags(write=False)
        with self._lock:
            self._lowercase[model_id] = lowercase
            for key, row in zip(keys, rows, strict=True):
                self._entries[key] = row
