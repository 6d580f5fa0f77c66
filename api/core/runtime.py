"""The router's long-lived parts in one process (a gunicorn worker), built from settings.

Built after fork, in the worker: the gRPC channel, the PostgreSQL connection and the threads
(heads poller, inference-log writer) must not cross a fork.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from api.core import metrics
from api.core.auto_rollback import AutoRollback
from api.core.deadlines import Deadlines
from api.core.embedding_cache import RouterEmbeddingCache
from api.core.monitoring import DriftMonitor, MonitoringLoop
from api.core.predictor import Predictor
from api.core.rate_limit import TenantRateLimiter
from api.core.reload_generation import FILE_NAME as RELOAD_GENERATION_FILE
from api.core.reload_generation import ReloadGeneration
from api.core.requests import Limits
from api.core.settings import RouterSettings
from api.core.tenant_heads import TenantHeads
from embedder.client import EmbedderClient
from heads import mapped_weights
from heads.known_checksums import FILE_NAME as KNOWN_CHECKSUMS_FILE
from heads.known_checksums import KnownChecksums
from inferencedb.answer_counts import AnswerCounts
from inferencedb.centroids import CentroidAccumulator
from inferencedb.database import Database
from inferencedb.feedback import FeedbackStore
from inferencedb.inference_log import InferenceLog
from inferencedb.keys import KeyStore
from inferencedb.leader import DRIFT_LOCK_KEY, ROLLBACK_LOCK_KEY, Leadership
from inferencedb.migrations import apply_migrations

log = logging.getLogger(__name__)
MIGRATION_RETRY_S = 5.0


@dataclass
class Runtime:
    settings: RouterSettings
    heads: TenantHeads
    embedder: EmbedderClient
    inference_log: InferenceLog
    predictor: Predictor
    feedback: FeedbackStore
    database: Database
    keys: KeyStore
    limiter: TenantRateLimiter
    centroids: CentroidAccumulator | None = None
    answer_counts: AnswerCounts | None = None
    monitoring: MonitoringLoop | None = None

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(s.max_texts, s.max_text_chars, s.max_top_k, s.default_top_k)

    def close(self) -> None:
        """Shut down within gunicorn's graceful timeout, whatever the database does. The inference
        log goes first: each of its rows is already in the journal, so a database that does not
        take them within a few seconds only leaves them there for replay. Then the best-effort
        statistics, each call bounded by the database's timeout."""
        self.inference_log.close(timeout_s=5.0)
        self.heads.stop()
        if self.monitoring is not None:
            self.monitoring.stop()
        self.keys.close()
        for sums in (self.centroids, self.answer_counts):
            if sums is not None:
                sums.flush(force=True)  # never raises: what it cannot write is logged
        self.database.close()
        self.embedder.close()


def _migrate_until_done(dsn: str, stop: threading.Event) -> None:
    """Apply migrations, retrying while PostgreSQL is unreachable. Predictions are served
    meanwhile: their rows wait in the spool until the table exists."""
    while not stop.is_set():
        try:
            applied = apply_migrations(dsn, lock_timeout_s=60.0, connect_timeout_s=5.0)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
            return
        except Exception as exc:  # noqa: BLE001 - any failure: keep serving, try again later
            log.warning("migrations not applied yet (%s); retrying in %.0fs", exc, MIGRATION_RETRY_S)
            stop.wait(MIGRATION_RETRY_S)


def build_runtime(settings: RouterSettings) -> Runtime:
    mapped_weights.RESIDENT.budget_bytes = settings.resident_head_mb * 2**20 or None
    # The reload generation is per router, in the spool its workers share (the store may be read-only).
    generation = ReloadGeneration(Path(settings.spool_dir) / RELOAD_GENERATION_FILE)
    heads = TenantHeads(
        settings.model_store,
        generation=generation,
        rescan_interval_s=settings.rescan_interval_s,
        settled_rescan_interval_s=settings.settled_rescan_interval_s,
        settle_s=settings.rescan_settle_s,
        # per router, like the reload generation: its workers share what they verified
        known_checksums=KnownChecksums(Path(settings.spool_dir) / KNOWN_CHECKSUMS_FILE),
    )
    heads.refresh()
    heads.check_weights(settings.weights_check_at_start_s)  # a small store: all of it, as before
    embedder = EmbedderClient(settings.embedder_address, timeout_s=settings.embed_timeout_s, retries=1)
    if settings.migrate_on_start:
        migrations = threading.Thread(
            target=_migrate_until_done, args=(settings.database_url, threading.Event()), name="migrations", daemon=True
        )
        migrations.start()
        migrations.join(timeout=15.0)  # usually milliseconds; a database outage must not block serving
    inference_log = InferenceLog(
        settings.database_url,
        spool_dir=Path(settings.spool_dir),
        queue_size=settings.log_queue_size,
        queue_max_bytes=settings.log_queue_bytes,
        batch_size=settings.log_batch_size,
        observer=metrics.on_log_event,
    ).start()
    database = Database(settings.database_url, max_connections=settings.threads, timeout_s=settings.db_timeout_s)
    centroids = CentroidAccumulator(database)
    answer_counts = AnswerCounts(database)
    predictor = Predictor(
        heads,
        embedder,
        inference_log,
        embed_timeout_s=settings.embed_timeout_s,
        decimals=settings.probability_decimals,
        on_shadow_error=lambda model: metrics.SHADOW_ERRORS.labels(model).inc(),
        on_embeddings=centroids.add,
        on_answers=answer_counts.add,
        embedding_cache=RouterEmbeddingCache(settings.embedding_cache_size) if settings.embedding_cache_size else None,
        share_embedding_cache=settings.share_embedding_cache,
        deadlines=Deadlines(
            default_s=settings.embed_timeout_s,
            per_model_ms=settings.model_deadlines_ms,
            max_s=settings.max_deadline_ms / 1000,
            reserve_floor_s=settings.fallback_reserve_ms / 1000,
        ),
    )
    drift = DriftMonitor(
        database, heads, leadership=Leadership(settings.database_url, DRIFT_LOCK_KEY, name="drift", timeout_s=5.0)
    )

    heads.start_polling(settings.reload_interval_s, on_tick=lambda: metrics.publish_gauges(inference_log, heads))
    auto_rollback = AutoRollback(
        database,
        heads,
        interval_s=settings.rollback_check_interval_s,
        leadership=Leadership(settings.database_url, ROLLBACK_LOCK_KEY, name="rollback", timeout_s=5.0),
    )
    monitoring = MonitoringLoop(
        [centroids.flush, answer_counts.flush, drift.run_if_due, auto_rollback.run_if_due],
        on_stop=[drift.close, auto_rollback.close],
    ).start()
    metrics.publish_gauges(inference_log, heads)
    keys = KeyStore(settings.database_url, snapshot=Path(settings.spool_dir) / "api-keys.json").start()
    limiter = TenantRateLimiter(
        rate_rps=settings.tenant_rate_rps, burst=settings.tenant_burst, workers=settings.workers, limits_for=keys.limits
    )
    return Runtime(
        settings,
        heads,
        embedder,
        inference_log,
        predictor,
        FeedbackStore(database),
        database,
        keys,
        limiter,
        centroids=centroids,
        answer_counts=answer_counts,
        monitoring=monitoring,
    )
