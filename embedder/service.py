"""The embedding service core: validation, normalisation, phrase cache, de-duplication and
micro-batching around a sentence encoder. It knows nothing of gRPC; embedder/grpc_server.py and
the in-process CLI are thin adapters over `EmbeddingService.embed`.

Every request names a cache scope ("" when it does not): cache entries and computations in
flight are shared within a scope only, since both show in `cache_hits` and in latency.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from embedder.batcher import MicroBatcher, Ticket
from embedder.cache import PhraseCache, cache_key
from embedder.encoder import EncoderInfo, SentenceEncoder
from embedder.errors import DeadlineExceeded, EmbedderError, FeaturesUnsupported, InputTooLarge, InvalidInput
from embedder.features import Features, UnknownFeatures, embedding_id, parse_features
from embedder.normalize import is_blank, normalize_text


@dataclass(frozen=True)
class Limits:
    max_texts: int = 1024
    max_text_chars: int = 50_000


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray  # float32 [n, dim of the features], in request order
    cache_hits: list[bool]
    features: str = "sentence"  # the feature set's name (embedder/features.py)


# What the batcher computes: (cache key, normalised text, feature set).
_Item = tuple[bytes, str, Features]


class ServiceObserver(Protocol):
    def on_request(self, texts: int, hits: int, seconds: float, outcome: str) -> None: ...

    def on_batch(self, size: int, seconds: float, failed: bool) -> None: ...

    def on_expired(self, count: int) -> None: ...


class _NoObserver:
    def on_request(self, texts: int, hits: int, seconds: float, outcome: str) -> None:
        pass

    def on_batch(self, size: int, seconds: float, failed: bool) -> None:
        pass

    def on_expired(self, count: int) -> None:
        pass


def dedupe(keys: Sequence[bytes]) -> tuple[list[bytes], list[int]]:
    """(unique keys in first-seen order, index into them for every input key)."""
    position: dict[bytes, int] = {}
    inverse = [position.setdefault(k, len(position)) for k in keys]
    return list(position), inverse


def validate_texts(texts: Sequence[str], limits: Limits, *, lowercase: bool) -> list[str]:
    """Normalised texts, or InvalidInput / InputTooLarge naming the text and the limit."""
    if len(texts) > limits.max_texts:
        raise InputTooLarge(f"too many texts: {len(texts)}; the limit is {limits.max_texts} per request")
    normalized = []
    for i, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise InputTooLarge(
                f"texts[{i}] has {len(text)} characters; the limit is {limits.max_text_chars} "
                "(texts within it are truncated to the model's maximum sequence length)"
            )
        if is_blank(text):
            raise InvalidInput(f"texts[{i}] is empty or whitespace-only")
        normalized.append(normalize_text(text, lowercase=lowercase))
    return normalized


class EmbeddingService:
    def __init__(
        self,
        encoder: SentenceEncoder,
        *,
        cache: PhraseCache,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 4096,
        limits: Limits = Limits(),
        observer: ServiceObserver | None = None,
    ):
        self.info: EncoderInfo = encoder.info
        self.limits = limits
        self.cache = cache
        self._encoder = encoder
        self._observer = observer or _NoObserver()
        self._batcher: MicroBatcher[_Item, np.ndarray] = MicroBatcher(
            self._encode,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            max_queue=max_queue,
            observer=self._observer,
            expect_more=lambda: self._arriving > 0,
            workers=getattr(encoder, "lanes", 1),  # a batch forms and starts while another runs
        )
        # Keys being computed right now: a concurrent request for the same phrase waits on the
        # same ticket instead of computing it again. Guarded, with the cache lookup, by _lock.
        self._inflight: dict[bytes, Ticket[_Item, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._requests_in_flight = 0
        # Requests between their start and their texts' submission: the batch waits for them only.
        self._arriving = 0

    @property
    def queue_depth(self) -> int:
        return self._batcher.depth

    @property
    def xla_shapes_ready(self) -> int:
        """Call shapes the encoder has compiled with XLA so far (0 for encoders without XLA)."""
        runner = getattr(self._encoder, "runner", None)
        return len(runner.compiled_shapes) if runner is not None else 0

    @property
    def xla_shapes_failed(self) -> int:
        """Call shapes whose XLA compilation failed: they keep the graph function, for good."""
        runner = getattr(self._encoder, "runner", None)
        return len(runner.failed_shapes) if runner is not None else 0

    @property
    def xla_shapes_planned(self) -> int:
        """Call shapes the encoder compiles with XLA in all (0 for encoders without XLA)."""
        runner = getattr(self._encoder, "runner", None)
        return len(runner.shapes()) if runner is not None and runner.xla_max_tokens > 0 else 0

    @property
    def requests_in_flight(self) -> int:
        return self._requests_in_flight

    def _encode(self, items: list[_Item]) -> list[np.ndarray]:
        if not self.info.layers:
            return list(self._encoder.embed([text for _key, text, _features in items]))
        # One model call for the whole batch whatever each item asked for, each text once (a text
        # asked for in two feature sets is two items); each item keeps a copy of its columns only,
        # so a cached vector does not hold every layer of its batch.
        rows: dict[str, int] = {}
        for _key, text, _features in items:
            rows.setdefault(text, len(rows))
        stack = self._encoder.embed_layers(list(rows))
        return [stack[rows[text], features.columns(self.info.dim)].copy() for _key, text, features in items]

    def features(self, name: str) -> Features:
        """The feature set called `name`: InvalidInput for a name that is none, FeaturesUnsupported
        for layers this model does not have."""
        try:
            features = parse_features(name)
        except UnknownFeatures as exc:
            raise InvalidInput(str(exc)) from None
        try:
            features.check(self.info.layers)
        except UnknownFeatures as exc:
            raise FeaturesUnsupported(str(exc)) from None
        return features

    def _on_done(self, ticket: Ticket[_Item, np.ndarray]) -> None:
        key = ticket.item[0]
        with self._lock:
            if self._inflight.get(key) is ticket:
                del self._inflight[key]
            if ticket.future.exception() is None:
                self.cache.put(key, ticket.future.result())

    def embed(
        self, texts: Sequence[str], *, timeout: float | None = None, scope: str = "", features: str = ""
    ) -> EmbedResult:
        """Vectors of feature set `features` ("": the sentence embedding, embedder/features.py) for
        `texts`, in order. Cache hits and shared computations come from requests of the same
        `scope` only. Raises an EmbedderError subclass on any failure."""
        started = time.perf_counter()
        with self._lock:
            self._requests_in_flight += 1
            self._arriving += 1
        arrival = _Arrival(self)
        try:
            result = self._embed(texts, timeout, scope, self.features(features), arrival)
        except EmbedderError as exc:
            self._observer.on_request(len(texts), 0, time.perf_counter() - started, exc.code)
            raise
        finally:
            arrival.done(nudge=True)
            with self._lock:
                self._requests_in_flight -= 1
        self._observer.on_request(len(texts), sum(result.cache_hits), time.perf_counter() - started, "ok")
        return result

    def _embed(
        self, texts: Sequence[str], timeout: float | None, scope: str, features: Features, arrival: _Arrival
    ) -> EmbedResult:
        # A caller without a deadline (gRPC reports one as centuries away) waits as long as it takes;
        # a wait that long would overflow the platform's timeout.
        deadline = None if timeout is None or timeout >= threading.TIMEOUT_MAX else time.monotonic() + timeout
        if not texts:
            return EmbedResult(np.zeros((0, features.dim(self.info.dim)), np.float32), [], features.name)
        normalized = validate_texts(texts, self.limits, lowercase=self.info.lowercase)
        # The scope and the features are part of the key: a key identifies both a cache entry and a
        # computation in flight.
        vectors_id = embedding_id(self.info.model_id, features.name)
        keys = [cache_key(vectors_id, t, scope=scope) for t in normalized]
        unique, inverse = dedupe(keys)
        unique_texts: dict[int, str] = {}
        for text, u in zip(normalized, inverse):
            unique_texts.setdefault(u, text)

        with self._lock:
            found = self.cache.get_many(unique)
            waiting: dict[int, Ticket[_Item, np.ndarray]] = {}
            to_submit = []
            for u, (key, vector) in enumerate(zip(unique, found)):
                if vector is not None:
                    continue
                ticket = self._inflight.get(key)
                if ticket is not None and ticket.extend_deadline(deadline):
                    waiting[u] = ticket
                else:
                    to_submit.append(u)
            arrival.done(nudge=False)  # before submit(), whose notify wakes the batcher to a settled count
            if to_submit:
                # on_done takes self._lock, so it cannot run before the tickets are recorded below.
                tickets = self._batcher.submit(
                    [(unique[u], unique_texts[u], features) for u in to_submit], deadline, on_done=self._on_done
                )
                for u, ticket in zip(to_submit, tickets):
                    self._inflight[unique[u]] = ticket
                    waiting[u] = ticket
        if not to_submit:
            self._batcher.nudge()  # this request's arrival no longer holds a forming batch back

        for u, ticket in waiting.items():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                found[u] = ticket.future.result(timeout=remaining)
            except FutureTimeout:
                raise DeadlineExceeded("the deadline passed before the embeddings were computed") from None
            except EmbedderError as exc:
                # The same exception object is shared by every request of a batch.
                raise type(exc)(exc.message) from None
        return EmbedResult(
            vectors=np.stack([found[u] for u in inverse]),
            cache_hits=[u not in waiting for u in inverse],
            features=features.name,
        )

    def close(self, timeout: float | None = None, *, wait_compiling: bool = True) -> None:
        """Drain the batcher within `timeout`, then stop the encoder. A compilation under way cannot
        be interrupted: with `wait_compiling` False it is left running (for a process that then ends
        without finalizing, see `python -m embedder serve`)."""
        self._batcher.close(timeout)
        close_encoder = getattr(self._encoder, "close", None)
        if close_encoder is not None:
            close_encoder(timeout if wait_compiling else 0)


class _Arrival:
    """One request counted in `EmbeddingService._arriving` until its texts are queued (or it ends)."""

    __slots__ = ("_service", "_pending")

    def __init__(self, service: EmbeddingService):
        self._service = service
        self._pending = True

    def done(self, *, nudge: bool) -> None:
        """Idempotent; called with the service's lock held when `nudge` is False."""
        if not self._pending:
            return
        self._pending = False
        if nudge:
            with self._service._lock:
                self._service._arriving -= 1
            self._service._batcher.nudge()
        else:
            self._service._arriving -= 1
