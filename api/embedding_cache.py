"""A small per-worker cache of embeddings in front of the central embedding service.

The embedder's LRU cache already spares the model a phrase it has seen, but every text still
costs the router a gRPC round trip (serialise, send, wait, parse), which is most of the router's
CPU per single-text request. The phrases that repeat most (the head of the usual Zipf-like
traffic) are kept here as well, so they never leave the worker.

Keyed by (embedder model id, text as the client sent it): a phrase's vector depends on the
encoder only, never on the tenant or the head, so sharing it across tenants leaks nothing.
Vectors are stored only from an answer of the model the head was trained with, and copied out of
the batch array, so a cached row never keeps a whole response alive.
"""

from __future__ import annotations

import threading

import numpy as np
from cachetools import LRUCache


class LocalEmbeddingCache:
    def __init__(self, max_entries: int):
        self._entries: LRUCache = LRUCache(maxsize=max_entries)
        self._lowercase: dict[str, bool] = {}  # model id -> whether its normalisation lower-cases
        self._lock = threading.Lock()  # gthread workers share the cache between threads

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, model_id: str, texts: list[str]) -> list[np.ndarray | None]:
        with self._lock:
            return [self._entries.get((model_id, text)) for text in texts]

    def lowercase(self, model_id: str) -> bool:
        return self._lowercase.get(model_id, False)

    def store(self, model_id: str, texts: list[str], vectors: np.ndarray, *, lowercase: bool) -> None:
        rows = [row.copy() for row in vectors]
        for row in rows:
            row.setflags(write=False)
        with self._lock:
            self._lowercase[model_id] = lowercase
            for text, row in zip(texts, rows, strict=True):
                self._entries[(model_id, text)] = row
