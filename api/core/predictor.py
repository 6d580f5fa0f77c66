"""Prediction, free of HTTP: texts -> embeddings (central embedder) -> head -> decision ->
answer, with one inference-log record per text whatever the outcome.

Which head answers comes from the model's serving set (api/core/live_heads.py):
- the primary, or the A/B candidate for its share of callers (sticky per client id);
- the fallback, when the chosen head cannot answer (embedder unavailable, overloaded or past
  its share of the request's deadline, a head error); a fallback that needs no embedder keeps the
  endpoint answering during an embedder outage;
- shadows score the same embeddings after the answer is sent (`PredictResult.after_sent`), are
  logged with role `shadow`, and can never change or fail the answer.

One deadline covers the whole answer (api/core/deadlines.py): when the model has a fallback, the
chosen head's embedding call ends early enough to leave the fallback its reserve, so a slow
embedder costs the caller a fallback answer within the deadline, not a late answer or a 503.

The Flask adapter (api/web/routes_predict.py) only parses, calls `Predictor.predict` and renders.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from api.core.deadlines import Deadlines
from api.core.embedding_cache import RouterEmbeddingCache
from api.core.live_heads import LoadedServing
from api.core.requests import PredictRequest
from api.core.tenant_heads import TenantHeads
from api.errors import ApiError, EmbedderMismatch, EmbedderUnavailable, HeadFailed, NotFound, from_embedder_error
from embedder.client import Embeddings
from embedder.errors import EmbedderError
from embedder.features import split_embedding_id
from embedder.normalize import normalize_text
from heads.artifact import HeadArtifact
from heads.errors import ArtifactError
from inferencedb.prediction_record import PredictionRecord

log = logging.getLogger(__name__)


class EmbeddingSource(Protocol):
    def embed(self, texts, *, timeout: float | None = None, scope: str = "", features: str = ""): ...


class PredictionSink(Protocol):
    def log_many(self, records) -> None: ...


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    rejected: bool
    top_k: list[tuple[str, float]]
    cache_hit: bool | None  # None when the answering head used no embedding


@dataclass(frozen=True)
class PredictResult:
    model: str
    version: str
    request_id: str
    role: str  # primary | candidate | fallback
    predictions: list[Prediction]
    embed_ms: float
    head_ms: float
    total_ms: float  # from the request's arrival
    deadline_ms: float = 0.0  # the deadline the whole answer had
    # Run each, in order, once the response has been sent: the fallback's cost as the caller
    # met it (api/core/deadlines.py), then the shadows' scoring.
    after_sent: tuple[Callable[[], None], ...] = ()


@dataclass(frozen=True)
class _Scored:
    probs: np.ndarray
    embedded: object | None  # embedder.client.Embeddings, when the head used embeddings
    model_inputs: list[str]
    head_ms: float


# A slow or dead embedder sends every request of a model to its fallback: one log line per model
# and cause this often, with the number of answers since, instead of one per request.
FALLBACK_LOG_INTERVAL_S = 10.0


class ThrottledLog:
    """A warning logged at most once per `interval_s` for each key; the next one says how many
    were left out in between."""

    def __init__(self, logger: logging.Logger, *, interval_s: float):
        self._log = logger
        self._interval_s = interval_s
        self._last: dict[object, tuple[float, int]] = {}  # key -> (when last logged, left out since)

    def warn(self, key: object, message: str, *args) -> None:
        now = time.monotonic()
        last, skipped = self._last.get(key, (-self._interval_s, 0))
        if now - last < self._interval_s:
            self._last[key] = (last, skipped + 1)  # a race between threads only miscounts by one
            return
        self._last[key] = (now, 0)
        if skipped:
            message += f" ({skipped} more since the last such line)"
        self._log.warning(message, *args)


# Up to this many probabilities, one full sort beats a partition followed by a sort of the
# partition (3 against 14 us for one text of 151 classes; 55 against 18 at 2,000).
FULL_SORT_MAX = 512


def top_k_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """[n, k] class indices, most probable first."""
    k = min(k, probs.shape[1])
    if probs.size <= FULL_SORT_MAX:
        return np.argsort(-probs, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def share(key: str) -> float:
    """A stable position in [0, 100) for `key`: the same caller lands in the same A/B bucket in
    every worker and after every restart."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 10_000 / 100


def needs_embeddings(head: HeadArtifact) -> bool:
    return getattr(head, "needs_embeddings", True)


def choose_variant(
    serving: LoadedServing, model: str, client_id: str | None, request_id: str
) -> tuple[HeadArtifact, str]:
    if serving.candidate is not None:
        head, candidate = serving.candidate
        key = client_id if candidate.key == "client_id" and client_id else request_id
        if share(f"{model}\0{key}") < candidate.percent:
            return head, "candidate"
    return serving.primary, "primary"


def _record(head: HeadArtifact, role: str, context, index: int, text: str, **outcome) -> PredictionRecord:
    """One row of the inference log: who asked (context: request id, client id, tenant), which
    head in which role, which item, and what came of it."""
    request_id, client_id, tenant = context
    return PredictionRecord(
        request_id=request_id,
        item_index=index,
        tenant=tenant,
        model=head.model,
        version=head.version,
        role=role,
        input_text=text,
        client_id=client_id,
        **outcome,
    )


class Predictor:
    def __init__(
        self,
        heads: TenantHeads,
        embedder: EmbeddingSource,
        sink: PredictionSink,
        *,
        embed_timeout_s: float,
        decimals: int,
        on_shadow_error: Callable[[str], None] | None = None,
        on_embeddings: Callable[[str, str, str, np.ndarray], None] | None = None,
        on_answers: Callable[[list[PredictionRecord]], None] | None = None,
        embedding_cache: RouterEmbeddingCache | None = None,
        share_embedding_cache: bool = False,
        deadlines: Deadlines | None = None,
    ):
        self.heads = heads
        self._embedder = embedder
        self._sink = sink
        # The deadline of every answer; without per-model ones, `embed_timeout_s` for every model.
        self.deadlines = deadlines or Deadlines(default_s=embed_timeout_s)
        self._fallback_log = ThrottledLog(log, interval_s=FALLBACK_LOG_INTERVAL_S)
        self._decimals = decimals
        self._on_shadow_error = on_shadow_error or (lambda model: None)
        self._on_embeddings = on_embeddings  # (tenant, model, version, vectors) for drift statistics
        self._on_answers = on_answers  # the answered records (shadows' too), for drift statistics
        self._cache = embedding_cache
        # Cache scope of every embedding: the tenant, so that no tenant sees a cache hit (or its
        # latency) earned by another's text; "" (one namespace for all) when the operator shares.
        self._share_cache = share_embedding_cache

    # -- scoring steps

    def scope(self, tenant: str) -> str:
        """The cache scope of `tenant`'s texts."""
        return "" if self._share_cache else tenant

    def score(
        self, head: HeadArtifact, texts: list[str], *, deadline: float, scope: str
    ) -> tuple[np.ndarray, float, float]:
        """(probabilities [len(texts), classes], embedding ms, head ms) of `head` for normalised
        texts, through the same caches as predictions; ApiError on any failure. `deadline` is a
        time.monotonic() instant."""
        spent: list[float] = []
        scored = self._apply(head, texts, self._embed(head, texts, deadline, spent, scope))
        return scored.probs, sum(spent), scored.head_ms

    def _embed(self, head: HeadArtifact, texts: list[str], deadline: float, spent: list[float], scope: str):
        """Embeddings for a head that needs them (None otherwise); ApiError on any failure.
        The time of the call is appended to `spent` (milliseconds), failed calls included."""
        if not needs_embeddings(head):
            return None
        started = time.perf_counter()
        try:
            return self._call_embedder(head, texts, deadline, scope)
        finally:
            spent.append((time.perf_counter() - started) * 1000)

    def _call_embedder(self, head: HeadArtifact, texts: list[str], deadline: float, scope: str) -> Embeddings:
        """The texts' vectors: those in this worker's cache, the others from the embedder; both
        caches answer from texts sent in the same `scope` only."""
        if self._cache is None:
            return self._ask_embedder(head, texts, deadline, scope)
        found = self._cache.lookup(head.embedder_id, texts, scope=scope)
        missing = [i for i, vector in enumerate(found) if vector is None]
        if not missing:
            hits = np.ones(len(texts), dtype=bool)
            return Embeddings(np.stack(found), hits, head.embedder_id, self._cache.lowercase(head.embedder_id))
        asked = [texts[i] for i in missing]
        embedded = self._ask_embedder(head, asked, deadline, scope)
        self._cache.store(embedded.model_id, asked, embedded.vectors, scope=scope, lowercase=embedded.lowercase)
        if len(missing) == len(texts):
            return embedded
        vectors = np.empty((len(texts), embedded.vectors.shape[1]), dtype=embedded.vectors.dtype)
        hits = np.ones(len(texts), dtype=bool)
        for i, vector in enumerate(found):
            if vector is not None:
                vectors[i] = vector
        vectors[missing] = embedded.vectors
        hits[missing] = embedded.cache_hits
        vectors.setflags(write=False)
        return Embeddings(vectors, hits, embedded.model_id, embedded.lowercase)

    def _ask_embedder(self, head: HeadArtifact, texts: list[str], deadline: float, scope: str) -> Embeddings:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EmbedderUnavailable("the request's deadline passed before the embedding call")
        try:
            # The head's embedding id names the features it was trained on (embedder/features.py).
            features = split_embedding_id(head.embedder_id)[1]
            embedded = self._embedder.embed(texts, timeout=remaining, scope=scope, features=features)
        except EmbedderError as exc:
            raise from_embedder_error(exc) from None
        if embedded.model_id != head.embedder_id:
            raise EmbedderMismatch(
                f"model {head.model!r} version {head.version} was trained with embedder {head.embedder_id}, "
                f"but the embedding service runs {embedded.model_id}"
            )
        return embedded

    def _apply(self, head: HeadArtifact, texts: list[str], embedded) -> _Scored:
        started = time.perf_counter()
        try:
            if embedded is not None:
                probs = head.predict_proba(embedded.vectors)
                inputs = [normalize_text(t, lowercase=embedded.lowercase) for t in texts]
            else:
                probs = head.predict_proba(texts=texts)
                inputs = [normalize_text(t, lowercase=True) for t in texts]
        except ArtifactError as exc:  # its weights failed the check left for their first need
            # (heads/weights_check.py): the model did not load, as if its files had been refused
            # at load; the poller takes it out of serving. The fallback may still answer.
            log.warning("head %s@%s does not serve: %s", head.model, head.version, exc)
            why = head.weights_check.failure if head.weights_check else "its files do not load"
            raise NotFound(f"model {head.model!r} failed to load: version {head.version}: {why}") from None
        except Exception as exc:  # noqa: BLE001 - any head failure: the fallback may still answer
            log.exception("head %s@%s failed", head.model, head.version)
            raise HeadFailed(f"model {head.model!r} version {head.version} failed: {type(exc).__name__}") from None
        return _Scored(probs, embedded, inputs, (time.perf_counter() - started) * 1000)

    # -- records

    def _records(self, head, role, texts, scored, chosen, top, ranked, context, timings) -> list[PredictionRecord]:
        embed_ms, total_ms = timings
        return [
            _record(
                head,
                role,
                context,
                i,
                text,
                model_input=scored.model_inputs[i],
                label=head.rule.label_of(int(chosen[i])),
                probability=float(top[i]),
                top_k=[(head.labels[j], round(float(scored.probs[i, j]), self._decimals)) for j in ranked[i]],
                embed_ms=embed_ms,
                head_ms=scored.head_ms,
                total_ms=total_ms,
                cache_hit=bool(scored.embedded.cache_hits[i]) if scored.embedded is not None else None,
                status="ok",  # a rejection is an answer: the reject label, served
                embedding_model=scored.embedded.model_id if scored.embedded is not None else None,
            )
            for i, text in enumerate(texts)
        ]

    def _log_answers(self, records: list[PredictionRecord]) -> None:
        """Into the inference log, and counted for drift; neither ever fails the request."""
        self._sink.log_many(records)
        if self._on_answers is not None:
            try:
                self._on_answers(records)
            except Exception:  # noqa: BLE001 - statistics never fail an answer
                log.exception("answers of %s@%s not counted", records[0].model, records[0].version)

    def _log_failure(
        self, head: HeadArtifact, role: str, texts: list[str], error: ApiError, context, started: float
    ) -> None:
        total_ms = (time.perf_counter() - started) * 1000
        self._sink.log_many(
            _record(
                head, role, context, i, text, total_ms=total_ms, status=error.code, embedding_model=head.embedder_id
            )
            for i, text in enumerate(texts)
        )

    # -- the request

    def predict(
        self,
        model: str,
        request: PredictRequest,
        *,
        request_id: str,
        client_id: str | None = None,
        tenant: str,
        timeout_s: float | None = None,
        received: float | None = None,
    ) -> PredictResult:
        """The answer to `request`, ready within the deadline: `timeout_s` (else the model's
        default) from `received`, the time.monotonic() instant the request arrived (default: now)."""
        now = time.monotonic()
        received = now if received is None else min(received, now)
        started = time.perf_counter() - (now - received)  # the request's arrival, on the timings' clock
        budget_s = self.deadlines.budget_s(tenant, model, timeout_s)
        deadline = received + budget_s
        serving = self.heads.get(tenant, model)  # NotFound before any work, and for other tenants' models
        head, role = choose_variant(serving, model, client_id, request_id)
        texts = [normalize_text(t) for t in request.texts]
        context = (request_id, client_id, tenant)
        scope = self.scope(tenant)
        fallback = serving.fallback if serving.fallback is not head else None
        # The chosen head must be done in time for the fallback to answer in its place.
        own_deadline = deadline - (
            self.deadlines.reserve_s(tenant, model, fallback.version, budget_s) if fallback else 0.0
        )

        embedded, spent, fallback_started = None, [], None
        called = time.monotonic()
        try:
            embedded = self._embed(head, texts, own_deadline, spent, scope)
            scored = self._apply(head, texts, embedded)
        except ApiError as error:
            if fallback is None:
                self._log_failure(head, role, request.texts, error, context, started)
                raise
            fallback_started = time.monotonic()
            # How late the primary gave up past its share; not a wait before the call (a request
            # queued behind others fails at once, in time for what was left of its deadline).
            lateness_s = max(0.0, fallback_started - max(own_deadline, called))
            self._fallback_log.warn(
                (tenant, model, error.code),
                "model %s: %s failed (%s); answering with fallback %s",
                model,
                role,
                error.code,
                fallback.version,
            )
            try:
                reuse = embedded if embedded is not None and embedded.model_id == fallback.embedder_id else None
                scored = self._apply(fallback, texts, reuse or self._embed(fallback, texts, deadline, spent, scope))
            except ApiError:
                self._log_failure(head, role, request.texts, error, context, started)
                raise error from None
            head, role = fallback, "fallback"
        embed_ms = sum(spent)

        chosen, top = head.rule.decide(scored.probs)
        ranked = top_k_indices(scored.probs, request.top_k)
        total_ms = (time.perf_counter() - started) * 1000
        records = self._records(head, role, request.texts, scored, chosen, top, ranked, context, (embed_ms, total_ms))
        self._log_answers(records)
        if self._on_embeddings is not None and scored.embedded is not None:
            self._on_embeddings(tenant, model, head.version, scored.embedded.vectors)
        predictions = [
            Prediction(
                label=r.label,
                probability=round(r.probability, self._decimals),
                rejected=bool(head.rule.threshold > 0 and top[i] < head.rule.threshold),
                top_k=list(r.top_k),
                cache_hit=r.cache_hit,
            )
            for i, r in enumerate(records)
        ]
        after_sent = []
        if fallback_started is not None:
            # Measured to the response sent, not to the answer ready: the rendering and the
            # writing are part of what the reserve must leave time for.
            version = head.version
            after_sent.append(
                lambda: self.deadlines.observe(
                    tenant, model, version, time.monotonic() - fallback_started, lateness_s=lateness_s
                )
            )
        if serving.shadows:
            after_sent.append(self._shadow_job(serving, head, request, texts, scored.embedded, context))
        return PredictResult(
            model,
            head.version,
            request_id,
            role,
            predictions,
            embed_ms,
            scored.head_ms,
            total_ms,
            budget_s * 1000,
            tuple(after_sent),
        )

    def _shadow_job(self, serving: LoadedServing, answered: HeadArtifact, request, texts, embedded, context):
        request_id, tenant = context[0], context[2]

        def run() -> None:
            for shadow, fraction in serving.shadows:
                if shadow is answered or share(f"{request_id}\0{shadow.version}") >= fraction * 100:
                    continue
                try:
                    started = time.perf_counter()
                    usable = embedded if embedded is not None and embedded.model_id == shadow.embedder_id else None
                    spent: list[float] = []
                    if needs_embeddings(shadow) and usable is None:
                        if embedded is None:
                            continue  # the answer came without embeddings (fallback): nothing to compare on
                        # Trained on other features of the same model (embedder/features.py): its own
                        # vectors, asked for now that the answer is sent, within the model's deadline.
                        budget_s = self.deadlines.budget_s(tenant, shadow.model, None)
                        usable = self._embed(shadow, texts, time.monotonic() + budget_s, spent, self.scope(tenant))
                    scored = self._apply(shadow, texts, usable)
                    chosen, top = shadow.rule.decide(scored.probs)
                    ranked = top_k_indices(scored.probs, request.top_k)
                    timings = (sum(spent), (time.perf_counter() - started) * 1000)
                    self._log_answers(
                        self._records(shadow, "shadow", request.texts, scored, chosen, top, ranked, context, timings)
                    )
                except ApiError as error:  # its embeddings (logged at most every few seconds) or its head
                    self._fallback_log.warn(
                        (tenant, shadow.model, "shadow", error.code),
                        "model %s: shadow %s did not score (%s)",
                        shadow.model,
                        shadow.version,
                        error.code,
                    )
                    self._on_shadow_error(shadow.model)
                except Exception:  # noqa: BLE001 - a shadow never affects anything but its own rows
                    log.exception("shadow %s@%s failed", shadow.model, shadow.version)
                    self._on_shadow_error(shadow.model)

        return run
