"""Prometheus metrics for the embedding service (served on EMBEDDER_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class EmbedderMetrics:
    """Observer of the service core (see embedder.service.ServiceObserver)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("embedder_requests", "Embed requests by outcome", ["outcome"], registry=r)
        self.texts = Counter("embedder_texts", "Texts received in Embed requests", registry=r)
        self.request_seconds = Histogram(
            "embedder_request_seconds", "Embed request latency inside the service", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("embedder_batch_size", "Texts per model call", buckets=BATCH_BUCKETS, registry=r)
        self.model_seconds = Histogram(
            "embedder_model_seconds", "Duration of one model call (a batch)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.model_failures = Counter("embedder_model_failures", "Model calls that raised", registry=r)
        self.expired = Counter(
            "embedder_expired_texts", "Texts dropped because their deadline passed in the queue", registry=r
        )

    def on_request(self, texts: int, hits: int, seconds: float, outcome: str) -> None:
        self.requests.labels(outcome).inc()
        self.texts.inc(texts)
        self.request_seconds.observe(seconds)

    def on_batch(self, size: int, seconds: float, failed: bool) -> None:
        self.batch_size.observe(size)
        self.model_seconds.observe(seconds)
        if failed:
            self.model_failures.inc()

    def on_expired(self, count: int) -> None:
        self.expired.inc(count)

    def watch(self, service) -> None:
        """Export the live cache counters and queue depth of `service`, read at scrape time."""
        self.registry.register(_ServiceCollector(service))


class _ServiceCollector:
    def __init__(self, service):
        self._service = service

    def collect(self):
        stats = self._service.cache.stats()
        for name, value, doc in (
            ("embedder_cache_hits", stats.hits, "Phrase cache hits"),
            ("embedder_cache_misses", stats.misses, "Phrase cache misses"),
            ("embedder_cache_evictions", stats.evictions, "Phrases evicted from the cache"),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("embedder_cache_size", "Phrases in the cache", value=stats.size)
        yield GaugeMetricFamily("embedder_cache_capacity", "Phrase cache capacity", value=stats.maxsize)
        yield GaugeMetricFamily("embedder_queue_depth", "Texts waiting for the model", value=self._service.queue_depth)
        yield GaugeMetricFamily(
            "embedder_requests_in_flight", "Embed requests being served", value=self._service.requests_in_flight
        )
        yield GaugeMetricFamily(
            "embedder_xla_shapes_ready",
            "Call shapes compiled with XLA so far (small calls of other shapes run the graph meanwhile)",
            value=self._service.xla_shapes_ready,
        )
        yield GaugeMetricFamily(
            "embedder_xla_shapes_failed",
            "Call shapes whose XLA compilation failed or was not exact enough (they keep the graph function)",
            value=self._service.xla_shapes_failed,
        )
