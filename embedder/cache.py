"""The phrase cache: a thread-safe LRU from (scope, model id, normalised text) to a vector.

The scope is a cache namespace: texts sent in different scopes never share an entry (nor a
computation in flight, embedder/service.py), so a caller cannot learn through a cache hit what
was sent in another scope. The router uses one scope per tenant; "" is the shared namespace.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache


def cache_key(model_id: str, normalized_text: str, *, scope: str = "") -> bytes:
    """A fixed-size key for (scope, model id, normalised text), so a long text costs no more
    cache memory than a short one. Each part is length-prefixed: no two triples share a key."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (scope, model_id, normalized_text):
        data = part.encode("utf-8", "surrogatepass")  # any str, lone surrogates included
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.digest()


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    size: int
    maxsize: int


class _CountingLRU(LRUCache):
    def __init__(self, maxsize: int):
        super().__init__(maxsize=maxsize)
        self.evictions = 0

    def popitem(self):
        # cachetools calls popitem() only to make room: each call is one eviction.
        self.evictions += 1
        return super().popitem()


class PhraseCache:
    """LRU of read-only float32 vectors. `maxsize=0` disables caching (every lookup misses)."""

    def __init__(self, maxsize: int = 50_000):
        if maxsize < 0:
            raise ValueError(f"cache maxsize must be >= 0, got {maxsize}")
        self._lru = _CountingLRU(maxsize) if maxsize else None
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get_many(self, keys: list[bytes]) -> list[np.ndarray | None]:
        """Look up several keys under one lock acquisition; counts a hit or a miss for each."""
        with self._lock:
            if self._lru is None:
                self._misses += len(keys)
                return [None] * len(keys)
            found = [self._lru.get(k) for k in keys]
            hits = sum(v is not None for v in found)
            self._hits += hits
            self._misses += len(keys) - hits
            return found

    def put(self, key: bytes, vector: np.ndarray) -> None:
        if self._lru is None:
            return
        vector.flags.writeable = False
        with self._lock:
            self._lru[key] = vector

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._lru.evictions if self._lru is not None else 0,
                size=len(self._lru) if self._lru is not None else 0,
                maxsize=self._maxsize,
            )
