"""The live embedding centroid: per minute, the sum of the embeddings each model version scored
in this worker, written as one row per version to `embedding_centroids` (inferencedb/migrations/0005).
The monitoring report divides the sums of a window by their count for the centroid that drift is
measured on."""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np

from inferencedb.database import Database
from inferencedb.errors import DatabaseUnavailable

INSERT = "INSERT INTO embedding_centroids (bucket_start, tenant, model, version, n, vector_sum) VALUES %s"
# Each row's vector is sent as one array literal, '{s0,s1,...}', written here a row at a time:
# psycopg2 adapting a list of 384 floats holds the GIL in its C code for about 0.3 ms a row, so a
# 64-row statement stalled every request of the worker for about 20 ms (the p99 of a router with
# 10,000 models, once a minute). A row's literal holds the GIL about half as long, and request
# threads get it between rows. Statements of ROWS_PER_STATEMENT rows keep each commit small.
ROW_TEMPLATE = "(%s, %s, %s, %s, %s, %s::double precision[])"
ROWS_PER_STATEMENT = 64


def array_literal(vector: np.ndarray) -> str:
    """A PostgreSQL array literal of the vector's values, exact for float64 (repr round-trips)."""
    return "{" + ",".join(map(repr, vector.tolist())) + "}"


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
        """Write the sums gathered since the last flush, ROWS_PER_STATEMENT rows a statement;
        returns the rows written. Those a failed statement did not write are kept and merged into
        the next flush."""
        if not force and time.monotonic() < self._next_flush:
            return 0
        self._next_flush = time.monotonic() + self._interval
        with self._lock:
            pending, self._sums = self._sums, {}
        bucket = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        keys = list(pending)
        written = 0
        try:
            for start in range(0, len(keys), ROWS_PER_STATEMENT):
                chunk = keys[start : start + ROWS_PER_STATEMENT]
                rows = [(bucket, *key, pending[key][0], array_literal(pending[key][1])) for key in chunk]
                self._db.insert_many(INSERT, rows, template=ROW_TEMPLATE)
                written += len(chunk)
                time.sleep(0)  # let request threads have the GIL between statements
        except DatabaseUnavailable:
            with self._lock:  # keep what was not written for the next flush
                for key in keys[written:]:
                    n, total = pending[key]
                    entry = self._sums.setdefault(key, [0, np.zeros_like(total)])
                    entry[0] += n
                    entry[1] += total
        return written
