"""Deterministic stand-ins for unit tests of logic. Every component they replace also has tests
against the real thing (the real model, real gRPC server, real PostgreSQL)."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np

from embedder.encoder import EncoderInfo


class HashEncoder:
    """Unit vectors derived from a hash of the text; records every call.

    `delay_s` makes each call slow; `fail_on` makes a call raise when it contains that text;
    `lanes` is how many batches the service runs at once.
    """

    def __init__(
        self, dim: int = 8, *, delay_s: float = 0.0, fail_on: str | None = None, lowercase: bool = True, lanes: int = 1
    ):
        self.info = EncoderInfo(name="hash-encoder", version="1", dim=dim, lowercase=lowercase, max_seq_length=0)
        self.lanes = lanes  # the service runs a batch per lane at once
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    LAYERS = 6

    @staticmethod
    def vector(text: str, dim: int = 8) -> np.ndarray:
        raw = np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.uint8)[:dim].astype(np.float32) - 127.5
        return raw / np.linalg.norm(raw)

    @classmethod
    def feature_vectors(cls, texts: list[str], dim: int, features: str = "") -> np.ndarray:
        """float32 [len(texts), features' dim]: a layer's pool is the vector of the text salted with
        the layer, the last layer's (the sentence embedding) the text's own."""
        from embedder.features import parse_features

        parsed = parse_features(features)
        parsed.check(cls.LAYERS)
        layers = range(parsed.first_layer, parsed.last_layer + 1) if parsed.first_layer else [cls.LAYERS]
        salts = ["" if layer == cls.LAYERS else f"{layer}\0" for layer in layers]
        return np.stack([np.concatenate([cls.vector(salt + t, dim) for salt in salts]) for t in texts]).astype(
            np.float32
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"injected failure on {self.fail_on!r}")
        return np.stack([self.vector(t, self.info.dim) for t in texts]).astype(np.float32)

    @property
    def texts_embedded(self) -> list[str]:
        with self._lock:
            return [t for call in self.calls for t in call]


class HashTextEmbedder:
    """A heads.embedding.TextEmbedder with HashEncoder vectors, for pipeline logic tests."""

    layers = HashEncoder.LAYERS

    def __init__(self, dim: int = 32):
        from heads.embedding import EmbedderIdentity

        self.identity = EmbedderIdentity("hash-encoder@1", "hash-encoder", "1", dim)
        self.calls = 0

    def embed_chunk(self, texts, features=""):
        self.calls += 1
        return HashEncoder.feature_vectors(texts, self.identity.dim, features)

    def close(self):
        pass
