"""Periodic monitoring work of a router worker (run from the heads poller's tick):

- `CentroidAccumulator`: sums of the embeddings each model version scored, written to the
  `embedding_centroids` table once a minute (a vector per prediction row would be too big);
- `DriftMonitor`: every few minutes, the drift figures of each serving version over the last
  hour (api/report.py), published as Prometheus gauges.

Both are best-effort statistics: a database outage delays them (sums are kept and merged into
the next write), it never touches a prediction.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import numpy as np

from api import metrics
from api.database import Database, DatabaseUnavailable
from api.report import build_report
from api.tenant_heads import tenant_store
from heads.errors import HeadsError

log = logging.getLogger(__name__)

INSERT = "INSERT INTO embedding_centroids (bucket_start, tenant, model, version, n, vector_sum) VALUES %s"


class CentroidAccumulator:
    def __init__(self, database: Database, *, flush_interval_s: float = 60.0):
        self._db = database
        self._interval = flush_interval_s
        self._sums: dict[tuple[str, str, str], list] = {}
        self._lock = threading.Lock()
        self._next_flush = time.monotonic() + flush_interval_s

    def add(self, tenant: str, model: str, version: str, vectors: np.ndarray) -> None:
        total = vectors.sum(axis=0, dtype=np.float64)
        with self._lock:
            entry = self._sums.get((tenant, model, version))
            if entry is None:
                self._sums[(tenant, model, version)] = [len(vectors), total]
            else:
                entry[0] += len(vectors)
                entry[1] += total

    def flush(self, *, force: bool = False) -> int:
        """Write the sums gathered since the last flush in one statement; returns the rows written.
        If the database is unavailable they are kept and merged into the next flush."""
        if not force and time.monotonic() < self._next_flush:
            return 0
        self._next_flush = time.monotonic() + self._interval
        with self._lock:
            pending, self._sums = self._sums, {}
        bucket = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        rows = [(bucket, t, m, v, n, total.tolist()) for (t, m, v), (n, total) in pending.items()]
        try:
            self._db.insert_many(INSERT, rows)
        except DatabaseUnavailable:
            with self._lock:  # keep them for the next flush
                for key, (n, total) in pending.items():
                    entry = self._sums.setdefault(key, [0, np.zeros_like(total)])
                    entry[0] += n
                    entry[1] += total
            return 0
        return len(rows)


class DriftMonitor:
    def __init__(
        self, database: Database, heads, *, interval_s: float = 300.0, window: dt.timedelta = dt.timedelta(hours=1)
    ):
        self._db = database
        self._heads = heads
        self._interval = interval_s
        self._window = window
        self._next_run = time.monotonic() + min(30.0, interval_s)

    def run_if_due(self) -> None:
        if time.monotonic() < self._next_run:
            return
        self._next_run = time.monotonic() + self._interval
        until = dt.datetime.now(dt.UTC)
        for tenant, model in list(self._heads.all_sets()):
            try:
                store = tenant_store(self._heads.root, tenant)
                report = build_report(self._db, store, model, until - self._window, until, tenant=tenant)
            except DatabaseUnavailable:
                return
            except HeadsError as exc:  # a version in the window no longer loads: the others go on
                log.warning("drift of %s/%s skipped: %s", tenant, model, exc)
                continue
            for entry in report["versions"]:
                for kind, value in entry["drift"].items():
                    if value is not None:
                        metrics.DRIFT.labels(f"{tenant}/{model}", entry["version"], entry["role"], kind).set(value)


class MonitoringLoop:
    """Runs the database-bound monitoring work (centroid flushes, drift reports) every
    `interval_s` on a thread of its own, so that a slow or hanging database never delays a hot
    reload or a request. Each job is bounded by the database's own timeout (api/database.py)."""

    def __init__(self, jobs: list, *, interval_s: float = 1.0):
        self._jobs = jobs
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
