"""Embeddings for training: from the embedder in-process or over gRPC, cached on disk.

Both sources go through the embedder's own validation and normalisation, so a head sees in
training exactly the vectors it will see in serving. A head trains on one feature set of the
model (embedder/features.py): `FeatureEmbedder` is an embedder seen through it, and its identity
(the embedding id and the feature set's dimension) is what the head records. The matrix of a
dataset is cached on disk keyed by a hash of its texts and that id: retraining a head (new
architecture, new threshold) does not embed again.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from embedder.features import UnknownFeatures, embedding_id, parse_features
from heads.errors import ConfigError

CHUNK = 512


@dataclass(frozen=True)
class EmbedderIdentity:
    model_id: str  # the embedding id: the model and, unless "sentence", the feature set
    name: str
    version: str
    dim: int


class TextEmbedder(Protocol):
    identity: EmbedderIdentity  # of the sentence embedding
    layers: int  # pooled layers it serves besides (embedder/features.py)

    def embed_chunk(self, texts: list[str], features: str = "") -> np.ndarray: ...


class FeatureEmbedder:
    """`embedder`'s vectors of one feature set; `identity` names them and gives their size."""

    def __init__(self, embedder: TextEmbedder, features: str):
        parsed = parse_features(features)
        try:
            parsed.check(embedder.layers)
        except UnknownFeatures as exc:
            raise ConfigError(
                f"model.features: {exc}; train with `model: {{features: sentence}}`, or rebuild the model "
                "with `make setup` if it predates pooled layers"
            ) from None
        base = embedder.identity
        self.features = parsed.name
        self.identity = EmbedderIdentity(
            embedding_id(base.model_id, parsed.name), base.name, base.version, parsed.dim(base.dim)
        )
        self._embedder = embedder

    def embed_chunk(self, texts: list[str]) -> np.ndarray:
        return self._embedder.embed_chunk(texts, self.features)


class LocalEmbedder:
    """The embedding service core in this process (same cache, normalisation and limits)."""

    def __init__(self, model: str, *, cache_size: int = 50_000):
        from embedder.serve import build_service
        from embedder.settings import embedder_settings

        # One lane on every core: training embeds one chunk at a time, and the TensorFlow threads
        # fixed here are those the heads then train with (one thread per lane would halve both).
        settings = embedder_settings(model=model, cache_size=cache_size, max_texts=CHUNK, lanes=1)
        self._service = build_service(settings)
        info = self._service.info
        self.identity = EmbedderIdentity(info.model_id, info.name, info.version, info.dim)
        self.layers = info.layers

    def embed_chunk(self, texts: list[str], features: str = "") -> np.ndarray:
        return self._service.embed(texts, features=features).vectors

    def close(self) -> None:
        self._service.close()


class RemoteEmbedder:
    """A running embedding service, through the gRPC client."""

    def __init__(self, address: str, *, timeout_s: float = 120.0):
        from embedder.client import EmbedderClient

        self._client = EmbedderClient(address, timeout_s=timeout_s)
        info = self._client.info()
        self._chunk = min(CHUNK, info.max_texts)
        self.identity = EmbedderIdentity(info.model_id, info.name, info.version, info.dim)
        self.layers = info.layers

    def embed_chunk(self, texts: list[str], features: str = "") -> np.ndarray:
        vectors = []
        for i in range(0, len(texts), self._chunk):
            vectors.append(self._client.embed(texts[i : i + self._chunk], features=features).vectors)
        return np.concatenate(vectors)

    def close(self) -> None:
        self._client.close()


def texts_key(texts: list[str], model_id: str) -> str:
    digest = hashlib.sha256(model_id.encode())
    for text in texts:
        digest.update(b"\x1e")
        digest.update(text.encode())
    return digest.hexdigest()


class DatasetEmbeddingCache:
    """The embedding matrices of training datasets on disk, one .npy per (texts, embedder) pair,
    written atomically. (The router's cache of single texts is api/core/embedding_cache.py.)"""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, texts: list[str], model_id: str) -> Path:
        return self.directory / f"{texts_key(texts, model_id)}.npy"

    def embed(self, texts: list[str], embedder: FeatureEmbedder, *, description: str = "embedding") -> np.ndarray:
        path = self.path(texts, embedder.identity.model_id)
        if path.is_file():
            matrix = np.load(path)
            if matrix.shape == (len(texts), embedder.identity.dim):
                return matrix
        matrix = embed_with_progress(texts, embedder, description)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, matrix)
        os.replace(tmp, path)
        return matrix


def embed_with_progress(texts: list[str], embedder: FeatureEmbedder, description: str) -> np.ndarray:
    from tqdm import tqdm

    out = np.empty((len(texts), embedder.identity.dim), dtype=np.float32)
    with tqdm(total=len(texts), desc=description, unit="text", file=sys.stderr, dynamic_ncols=True) as bar:
        for i in range(0, len(texts), CHUNK):
            chunk = texts[i : i + CHUNK]
            out[i : i + len(chunk)] = embedder.embed_chunk(chunk)
            bar.update(len(chunk))
    return out
