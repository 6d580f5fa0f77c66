"""Prediction, free of HTTP: texts -> embeddings (central embedder) -> head -> decision ->
answer, with one inference-log record per text whatever the outcome.

The Flask adapter (api/app.py) only parses, calls `Predictor.predict` and renders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from api.errors import ApiError, EmbedderMismatch, from_embedder_error
from api.live_heads import LiveHeads
from api.prediction_record import PredictionRecord
from api.validation import PredictRequest
from embedder.errors import EmbedderError
from embedder.normalize import normalize_text


class EmbeddingSource(Protocol):
    def embed(self, texts, *, timeout: float | None = None): ...


class PredictionSink(Protocol):
    def log_many(self, records) -> None: ...


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    rejected: bool
    top_k: list[tuple[str, float]]
    cache_hit: bool


@dataclass(frozen=True)
class PredictResult:
    model: str
    version: str
    request_id: str
    predictions: list[Prediction]
    embed_ms: float
    head_ms: float
    total_ms: float


def top_k_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """[n, k] class indices, most probable first."""
    k = min(k, probs.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class Predictor:
    def __init__(
        self,
        heads: LiveHeads,
        embedder: EmbeddingSource,
        sink: PredictionSink,
        *,
        embed_timeout_s: float,
        decimals: int,
    ):
        self.heads = heads
        self._embedder = embedder
        self._sink = sink
        self._embed_timeout_s = embed_timeout_s
        self._decimals = decimals

    def predict(
        self,
        model: str,
        request: PredictRequest,
        *,
        request_id: str,
        client_id: str | None = None,
        tenant: str = "default",
    ) -> PredictResult:
        started = time.perf_counter()
        head = self.heads.get(model)  # NotFound before any work

        def log_failure(error: ApiError, embed_ms: float | None = None) -> ApiError:
            total_ms = (time.perf_counter() - started) * 1000
            self._sink.log_many(
                PredictionRecord(
                    request_id=request_id,
                    item_index=i,
                    tenant=tenant,
                    model=model,
                    version=head.version,
                    input_text=text,
                    embed_ms=embed_ms,
                    total_ms=total_ms,
                    client_id=client_id,
                    status=error.code,
                    embedding_model=head.embedder_id,
                )
                for i, text in enumerate(request.texts)
            )
            return error

        try:
            embedded = self._embedder.embed([normalize_text(t) for t in request.texts], timeout=self._embed_timeout_s)
        except EmbedderError as exc:
            raise log_failure(from_embedder_error(exc)) from None
        embed_ms = (time.perf_counter() - started) * 1000
        if embedded.model_id != head.embedder_id:
            raise log_failure(
                EmbedderMismatch(
                    f"model {model!r} version {head.version} was trained with embedder {head.embedder_id}, "
                    f"but the embedding service runs {embedded.model_id}"
                ),
                embed_ms,
            )

        t_head = time.perf_counter()
        probs = head.predict_proba(embedded.vectors)
        chosen, top = head.rule.decide(probs)
        ranked = top_k_indices(probs, request.top_k)
        head_ms = (time.perf_counter() - t_head) * 1000
        total_ms = (time.perf_counter() - started) * 1000

        labels, d = head.labels, self._decimals
        predictions, records = [], []
        for i, text in enumerate(request.texts):
            label = head.rule.label_of(int(chosen[i]))
            top_k = [(labels[j], round(float(probs[i, j]), d)) for j in ranked[i]]
            rejected = bool(head.rule.threshold > 0 and top[i] < head.rule.threshold)
            hit = bool(embedded.cache_hits[i])
            predictions.append(Prediction(label, round(float(top[i]), d), rejected, top_k, hit))
            records.append(
                PredictionRecord(
                    request_id=request_id,
                    item_index=i,
                    tenant=tenant,
                    model=model,
                    version=head.version,
                    input_text=text,
                    label=label,
                    probability=float(top[i]),
                    top_k=top_k,
                    embed_ms=embed_ms,
                    head_ms=head_ms,
                    total_ms=total_ms,
                    cache_hit=hit,
                    client_id=client_id,
                    status="ok",  # a rejection is an answer: the reject label, served
                    embedding_model=embedded.model_id,
                )
            )
        self._sink.log_many(records)
        return PredictResult(model, head.version, request_id, predictions, embed_ms, head_ms, total_ms)
