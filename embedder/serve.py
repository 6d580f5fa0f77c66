"""Wiring for `python -m embedder serve`: settings -> encoder -> service -> gRPC + metrics."""

from __future__ import annotations

import json
import logging

from embedder.cache import PhraseCache
from embedder.metrics import EmbedderMetrics
from embedder.service import EmbeddingService, Limits, ServiceObserver
from embedder.settings import EmbedderSettings
from embedder.stop_signals import StopSignals

log = logging.getLogger(__name__)


def build_service(settings: EmbedderSettings, observer: ServiceObserver | None = None) -> EmbeddingService:
    """Load the model named by the settings and wrap it in the cache and the batcher."""
    from embedder.encoder import configure_threads, load_encoder

    lanes, threads = configure_threads(settings.lanes, settings.tf_threads)
    encoder = load_encoder(
        settings.model,
        name=settings.model_name,
        version=settings.model_version,
        max_batch_tokens=settings.max_batch_tokens,
        lanes=lanes,
        xla_max_tokens=settings.xla_max_tokens,
        precision=settings.precision,
    )
    log.info("%d model lanes of %d TensorFlow threads each, %s", lanes, threads, settings.precision)
    encoder.warm_up()  # the first call traces and allocates: keep it off a request
    return EmbeddingService(
        encoder,
        cache=PhraseCache(settings.cache_size),
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1000.0,
        max_queue=settings.max_queue,
        limits=Limits(max_texts=settings.max_texts, max_text_chars=settings.max_text_chars),
        observer=observer,
    )


def serve(settings: EmbedderSettings) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight requests and exit."""
    from prometheus_client import start_http_server

    from embedder.grpc_server import start_server

    stop = StopSignals()  # first: a SIGTERM during the model's load still stops the server once ready

    metrics = EmbedderMetrics()
    service = build_service(settings, metrics)
    metrics.watch(service)
    metrics_port = None
    if settings.metrics_port >= 0:
        http_server, _ = start_http_server(settings.metrics_port, settings.metrics_address, registry=metrics.registry)
        metrics_port = http_server.server_port
    running = start_server(service, settings.address, threads=settings.grpc_threads)
    host = settings.address.rsplit(":", 1)[0]
    # One machine-readable line, so scripts and tests can find the ports that were picked.
    print(
        json.dumps(
            {
                "event": "ready",
                "address": f"{host}:{running.port}",
                "metrics_port": metrics_port,
                "model_id": service.info.model_id,
                "dim": service.info.dim,
                "xla_shapes": service.xla_shapes_planned,
            }
        ),
        flush=True,
    )
    received = stop.wait()
    log.info("shutting down on %s: draining in-flight requests (up to %.1fs)", received.name, settings.shutdown_grace_s)
    running.stop(settings.shutdown_grace_s)
    # Not waiting for an XLA compilation under way: at nice 19 on a busy host it can take minutes,
    # and the caller ends the process without finalizing (embedder/__main__.py).
    service.close(timeout=settings.shutdown_grace_s, wait_compiling=False)
    log.info("stopped")
