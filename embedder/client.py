"""Python client of the embedding service. No TensorFlow: routers and scripts import it.

The gRPC channel is created on first use in the calling process (and again after a fork), so a
client built before gunicorn forks its workers is safe to use in every worker. Calls retry on
UNAVAILABLE with exponential backoff inside the caller's deadline; other failures raise the
embedder error they stand for (embedder.errors), so callers map them to their own transport.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from embedder.errors import DeadlineExceeded, EmbedderError, FeaturesUnsupported, InvalidInput, Unavailable
from embedder.features import SENTENCE, UnknownFeatures, embedding_id, parse_features
from embedder.grpc_codes import error_from_rpc
from embedder.proto import embedder_pb2 as pb
from embedder.proto import embedder_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class RemoteModelInfo:
    name: str
    version: str
    dim: int
    model_id: str
    lowercase: bool
    max_seq_length: int
    max_texts: int
    max_text_chars: int
    layers: int = 0  # pooled encoder layers a request may ask for (embedder/features.py)

    @classmethod
    def from_message(cls, m: pb.ModelInfo) -> RemoteModelInfo:
        return cls(
            m.name, m.version, m.dim, m.model_id, m.lowercase, m.max_seq_length, m.max_texts, m.max_text_chars, m.layers
        )


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [n, dim], read-only
    cache_hits: np.ndarray  # bool [n]
    model_id: str  # the embedding id: the model and, unless "sentence", the features (embedder/features.py)
    lowercase: bool = False  # the server's model lower-cases: the text it saw is normalize_text(t, lowercase=True)


class EmbedderClient:
    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
    ):
        self.address = address
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.EmbedderStub | None = None

    def _get_stub(self) -> pb_grpc.EmbedderStub:
        with self._lock:
            if self._pid != os.getpid() or self._stub is None:
                # A channel inherited through fork() is unusable: make a new one, never close
                # the parent's (that would touch its threads' state from the child).
                self._channel = grpc.insecure_channel(
                    self.address,
                    options=[
                        ("grpc.max_receive_message_length", 128 * 1024 * 1024),
                        ("grpc.max_send_message_length", 128 * 1024 * 1024),
                        ("grpc.keepalive_time_ms", 30_000),
                        # Reconnect within a second or two of the embedder coming back, instead
                        # of gRPC's default backoff that grows to two minutes during an outage.
                        ("grpc.initial_reconnect_backoff_ms", 200),
                        ("grpc.max_reconnect_backoff_ms", 2_000),
                    ],
                )
                self._stub = pb_grpc.EmbedderStub(self._channel)
                self._pid = os.getpid()
            return self._stub

    def _call(self, method: str, request, timeout: float | None):
        deadline = time.monotonic() + (self.timeout_s if timeout is None else timeout)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"embedder at {self.address} did not answer in time")
            try:
                return getattr(self._get_stub(), method)(request, timeout=remaining)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                if not isinstance(error, Unavailable) or attempt >= self.retries:
                    raise error from None
            pause = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            attempt += 1
            if time.monotonic() + pause >= deadline:
                raise Unavailable(f"embedder at {self.address} is unavailable (gave up after {attempt} attempts)")
            time.sleep(pause)

    def info(self, *, timeout: float | None = None) -> RemoteModelInfo:
        return RemoteModelInfo.from_message(self._call("Info", pb.InfoRequest(), timeout))

    def embed(
        self, texts: Sequence[str], *, timeout: float | None = None, scope: str = "", features: str = ""
    ) -> Embeddings:
        """Vectors of feature set `features` ("": the sentence embedding, embedder/features.py) for
        `texts` in one RPC (the server enforces max_texts per request). Cache hits come only from
        requests of the same `scope` ("": the shared namespace)."""
        try:
            wanted = parse_features(features).name
        except UnknownFeatures as exc:
            raise InvalidInput(str(exc)) from None
        request = pb.EmbedRequest(texts=list(texts), cache_scope=scope, features="" if wanted == SENTENCE else wanted)
        response = self._call("Embed", request, timeout)
        served = response.features or SENTENCE  # a server that predates feature sets sends sentence vectors
        if served != wanted:
            raise FeaturesUnsupported(
                f"asked the embedder at {self.address} for features {wanted!r}, it sent {served!r}"
            )
        dim = response.dim or response.model.dim
        vectors = np.frombuffer(response.embeddings, dtype="<f4")
        if vectors.size != response.count * dim:
            raise EmbedderError(f"malformed response: {vectors.size} floats for {response.count} x {dim}")
        return Embeddings(
            vectors=vectors.reshape(response.count, dim),
            cache_hits=np.array(response.cache_hits, dtype=bool),
            model_id=embedding_id(response.model.model_id, served),
            lowercase=response.model.lowercase,
        )

    def embed_all(
        self,
        texts: Sequence[str],
        *,
        chunk_size: int = 256,
        timeout: float | None = None,
        scope: str = "",
        features: str = "",
    ) -> Embeddings:
        """Vectors for any number of texts, sent in sequential chunks of `chunk_size`."""
        parts = [
            self.embed(texts[i : i + chunk_size], timeout=timeout, scope=scope, features=features)
            for i in range(0, len(texts), chunk_size)
        ]
        if not parts:
            return self.embed([], timeout=timeout, scope=scope, features=features)
        return Embeddings(
            vectors=np.concatenate([p.vectors for p in parts]),
            cache_hits=np.concatenate([p.cache_hits for p in parts]),
            model_id=parts[0].model_id,
            lowercase=parts[0].lowercase,
        )

    def close(self) -> None:
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = self._stub = None
            self._pid = None
