"""Periodic monitoring work of a router worker, on its own thread (`MonitoringLoop`):

- the live embedding centroids (inferencedb/centroids.py `CentroidAccumulator`) and the answer
  counts (inferencedb/answer_counts.py `AnswerCounts`), flushed once a minute;
- `DriftMonitor`: every few minutes, the drift figures of each version that answered in the last
  hour (inferencedb/monitoring_report.py: two queries for all models together, over the
  per-minute sums above rather than the hour's predictions), published as Prometheus gauges.
  Computed once per deployment: only the worker holding the drift advisory lock (inferencedb/leader.py) runs it,
  reading each version's baseline from its manifest alone (no checksums, no weights), once: the
  baselines of the versions in the window are kept until a run no longer sees them.

Both are best-effort statistics: a database outage delays them (sums are kept and merged into
the next write), it never touches a prediction. The loop also runs the automatic rollback of
guarded promotions (api/core/auto_rollback.py), elected the same way with a lock of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from api.core import metrics
from heads.errors import HeadsError
from inferencedb.database import Database
from inferencedb.errors import DatabaseUnavailable
from inferencedb.leader import Leadership
from inferencedb.monitoring_report import TrainingBaseline, drift, drift_inputs

log = logging.getLogger(__name__)


class DriftMonitor:
    def __init__(
        self,
        database: Database,
        heads,
        *,
        interval_s: float = 300.0,
        window: dt.timedelta = dt.timedelta(hours=1),
        leadership: Leadership | None = None,
    ):
        """`leadership`: runs only while this process holds it (None: always, a lone process)."""
        self._db = database
        self._heads = heads
        self._leadership = leadership
        self._interval = interval_s
        self._window = window
        self._next_run = time.monotonic() + min(30.0, interval_s)
        # {(tenant, model, version): its baseline}, for the versions of the last run's window.
        self._baselines: dict[tuple[str, str, str], TrainingBaseline] = {}

    def run_if_due(self) -> None:
        if time.monotonic() < self._next_run:
            return
        self._next_run = time.monotonic() + self._interval
        if self._leadership is not None and not self._leadership.held():
            self._baselines = {}  # another worker computes drift now
            return
        until = dt.datetime.now(dt.UTC)
        try:
            observed = drift_inputs(self._db, until - self._window, until, counted=True)
        except DatabaseUnavailable as exc:
            log.warning("drift skipped until the next run: %s", exc)
            return
        # Only the models with answers in the window have drift to report, and their inputs come
        # in two queries for all of them, over per-minute sums: rows per minute and worker for
        # each (version, label, bucket) and each version that answered, whatever the traffic.
        baselines: dict[tuple[str, str, str], TrainingBaseline] = {}
        for tenant, model in [key for key in self._heads.all_sets() if key in observed]:
            inputs = observed[tenant, model]
            try:
                store = self._heads.store(tenant)
                figures = []
                for version, role in sorted(inputs.groups):
                    key = (tenant, model, version)
                    if key not in baselines:
                        baselines[key] = self._baseline(store, *key)
                    figures.append((version, role, drift(inputs, version, role, baselines[key])))
            except HeadsError as exc:  # a version in the window no longer loads: the others go on
                log.warning("drift of %s/%s skipped: %s", tenant, model, exc)
                continue
            for version, role, kinds in figures:
                for kind, value in kinds.items():
                    if value is not None:
                        metrics.DRIFT.labels(f"{tenant}/{model}", version, role, kind).set(value)
        self._baselines = {key: baseline for key, baseline in baselines.items() if baseline.labels}

    def _baseline(self, store, tenant: str, model: str, version: str) -> TrainingBaseline:
        """The version's baseline, read from its manifest the first time a run needs it. One that
        did not read (no labels) is read again next time: a store being synced may complete it."""
        kept = self._baselines.get((tenant, model, version))
        return kept if kept is not None else TrainingBaseline.from_manifest(store.baseline(model, version))

    def close(self) -> None:
        if self._leadership is not None:
            self._leadership.close()


class MonitoringLoop:
    """Runs the database-bound monitoring work (centroid flushes, drift reports, rollback checks) every
    `interval_s` on a thread of its own, so that a slow or hanging database never delays a hot
    reload or a request. Each job is bounded by the database's own timeout (inferencedb/database.py)."""

    def __init__(self, jobs: list, *, interval_s: float = 1.0, on_stop: list | None = None):
        """`on_stop`: called once the thread has stopped (e.g. to give up a leadership)."""
        self._jobs = jobs
        self._on_stop = on_stop or []
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MonitoringLoop:
        self._thread = threading.Thread(target=self._run, name="monitoring", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            for job in self._jobs:
                try:
                    job()
                except Exception:  # noqa: BLE001 - statistics must never stop the loop
                    log.exception("monitoring job failed")

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for close in self._on_stop:
            close()
