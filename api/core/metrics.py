"""Prometheus metrics of the router.

Under gunicorn every worker is a process; `api/web/gunicorn_conf.py` sets PROMETHEUS_MULTIPROC_DIR
before the workers start, so these metrics are shared through files and `/metrics` (served by
any worker) adds up all of them. Without it (tests, a single process) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
UNKNOWN_MODEL = "_unknown"  # label for requests naming no served model: keeps label cardinality bounded

REQUESTS = Counter("router_requests", "Predict requests by tenant/model and status", ["model", "status"])
# The latency histograms are per tenant, not per model: each label value costs a histogram 17
# series, so per-model histograms made 510,000 series at 10,000 models, and one /metrics render
# of two workers' files took 10.8 s of a serving worker's CPU (36.5 MB of text), past the metrics
# collector's 10 s timeout (loadtests/bench_metrics.py). Per model, the latency is a sum, one
# series (its rate over the rate of router_requests_total{status="200"} is the model's mean).
REQUEST_SECONDS = Histogram(
    "router_request_seconds", "Predict latency inside the router, by tenant", ["tenant"], buckets=LATENCY_BUCKETS
)
EMBED_SECONDS = Histogram(
    "router_embed_seconds", "Time waiting for the embedder, by tenant", ["tenant"], buckets=LATENCY_BUCKETS
)
HEAD_SECONDS = Histogram(
    "router_head_seconds", "Time in the numpy head, by tenant", ["tenant"], buckets=LATENCY_BUCKETS
)
MODEL_SECONDS = Counter(
    "router_model_request_seconds",
    "Predict latency inside the router of the answered requests, summed by tenant/model",
    ["model"],
)
TEXTS = Counter(
    "router_texts",
    "Texts answered, by model, version and role (primary, candidate, fallback)",
    ["model", "version", "role"],
)
EXPLANATIONS = Counter(
    "router_explanations",
    "Explain requests by tenant/model and status (never written as predictions)",
    ["model", "status"],
)
SHADOW_ERRORS = Counter("router_shadow_errors", "Shadow scorings that failed (the answer was not affected)", ["model"])
ERRORS = Counter("router_errors", "Error responses by error code", ["code"])
AUTO_ROLLBACKS = Counter(
    "router_auto_rollbacks", "Guarded promotions undone by the automatic rollback, by tenant/model", ["model"]
)
LOG_ROWS = Counter(
    "router_inference_log_rows", "Inference-log rows by event (written, spooled, replayed, lost, ...)", ["event"]
)
LOG_QUEUE_DEPTH = Gauge(
    "router_inference_log_queue_depth",
    "Rows waiting in memory for PostgreSQL (all workers)",
    multiprocess_mode="livesum",
)
LOG_SPOOL_FILES = Gauge(
    "router_inference_log_spool_files", "Spool files waiting for replay", multiprocess_mode="livemax"
)
LOG_DB_HEALTHY = Gauge(
    "router_inference_log_db_healthy", "1 when PostgreSQL accepts writes", multiprocess_mode="livemin"
)
DRIFT = Gauge(
    "router_drift",
    "Drift of a serving version over the last hour against its training data (label_psi, confidence_psi, "
    "centroid_cosine_distance)",
    ["model", "version", "role", "kind"],
    multiprocess_mode="mostrecent",
)
HEADS_LOADED = Gauge("router_heads_loaded", "Models with a serving head loaded", multiprocess_mode="livemax")
HEADS_UNCHECKED = Gauge(
    "router_heads_weights_unchecked",
    "Serving heads whose weights' checksum is still to be computed (heads/weights_check.py)",
    multiprocess_mode="livemax",
)
HEADS_FAILED = Gauge("router_heads_failed", "Models whose serving version failed to load", multiprocess_mode="livemax")
# One series per model that failed to load in this process's life: bounded by the store's models
# (validated folder names an operator made, never request input). The reason is in /readyz and the log.
HEAD_LOAD_FAILED = Gauge(
    "router_head_load_failed",
    "1 while a model's serving state does not load (it may still serve an earlier one), by tenant/model",
    ["model"],
    multiprocess_mode="livemax",
)
# One series per live worker (label pid): which operator's reload each has applied (/v1/admin/reload).
RELOAD_GENERATION = Gauge(
    "router_reload_generation",
    "The router's reload generation this worker applied last (0: no reload asked since it started)",
    multiprocess_mode="liveall",
)
_published_failures: set[str] = set()  # labels this process set to 1: reset to 0 once they load


def record_answer(
    model: str,
    tenant: str,
    *,
    seconds: float,
    embed_seconds: float,
    head_seconds: float,
    version: str,
    role: str,
    texts: int,
) -> None:
    """The metrics of one answered predict request; `model` is its tenant/model label."""
    REQUESTS.labels(model, "200").inc()
    MODEL_SECONDS.labels(model).inc(seconds)
    REQUEST_SECONDS.labels(tenant).observe(seconds)
    EMBED_SECONDS.labels(tenant).observe(embed_seconds)
    HEAD_SECONDS.labels(tenant).observe(head_seconds)
    TEXTS.labels(model, version, role).inc(texts)


def on_log_event(event: str, rows: int) -> None:
    """Observer for inferencedb.inference_log.InferenceLog."""
    LOG_ROWS.labels(event).inc(rows)


def publish_gauges(inference_log, heads) -> None:
    """Per-worker gauges, refreshed by the heads poller (every reload interval)."""
    stats = inference_log.stats()
    LOG_QUEUE_DEPTH.set(stats.queue_depth)
    LOG_SPOOL_FILES.set(stats.spool_files)
    LOG_DB_HEALTHY.set(1 if stats.db_healthy else 0)
    HEADS_LOADED.set(heads.count())
    HEADS_UNCHECKED.set(heads.unchecked)
    RELOAD_GENERATION.set(heads.reload_generation)
    failing = set(heads.errors)
    HEADS_FAILED.set(len(failing))
    for model in failing:
        HEAD_LOAD_FAILED.labels(model).set(1)
    for model in _published_failures - failing:
        HEAD_LOAD_FAILED.labels(model).set(0)
    _published_failures.clear()
    _published_failures.update(failing)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
