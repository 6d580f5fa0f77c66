"""The live embedding centroid: per minute, the sum of the embeddings each model version scored
in this worker, written as one row per version to `embedding_centroids` (inferencedb/migrations/0005).
The monitoring report divides the sums of a window by their count for the centroid that drift is
measured on."""

from __future__ import annotations

import datetime as dt
import struct
import threading
import time

import numpy as np

from inferencedb.database import Database
from inferencedb.errors import DatabaseUnavailable

COPY = "COPY embedding_centroids (bucket_start, tenant, model, version, n, vector_sum) FROM STDIN WITH (FORMAT binary)"
# Rows go in PostgreSQL's binary COPY format: a row's 384 sums are 384 big-endian doubles that
# numpy writes in microseconds, where a text literal took about 0.18 ms a row to format (and
# PostgreSQL as long to parse): a router with 10,000 active models spent 2 s of CPU a minute per
# worker on it, in bursts that held the GIL against requests. Statements of ROWS_PER_STATEMENT
# rows keep each transaction small.
ROWS_PER_STATEMENT = 64
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # no OIDs, no header extension
_TRAILER = struct.pack("!h", -1)
_FLOAT8_OID = 701
_ARRAY_HEADER = struct.Struct("!iiiii")  # dimensions, has-nulls flag, element type, length, lower bound
_FLOAT8_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])
_POSTGRES_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!i", len(data)) + data


def _float8_array(vector: np.ndarray) -> bytes:
    """A one-dimensional double precision[] in binary form: exact for float64."""
    elements = np.empty(len(vector), dtype=_FLOAT8_ELEMENT)
    elements["length"], elements["value"] = 8, vector
    body = _ARRAY_HEADER.pack(1, 0, _FLOAT8_OID, len(vector), 1) + elements.tobytes()
    return struct.pack("!i", len(body)) + body


def float8_array(data: bytes) -> np.ndarray:
    """A one-dimensional double precision[] from its binary form (SQL `array_send`), as float64:
    decoded by numpy in microseconds, where psycopg2 parses the text form's 384 numbers one by one
    (about 0.1 ms a row, and a drift run reads every row of its hour)."""
    dimensions, has_nulls, oid, length, _ = _ARRAY_HEADER.unpack_from(data)
    if dimensions != 1 or oid != _FLOAT8_OID:
        raise ValueError(f"not a one-dimensional double precision[]: {dimensions} dimensions, type {oid}")
    elements = np.frombuffer(data, dtype=_FLOAT8_ELEMENT, count=length, offset=_ARRAY_HEADER.size)
    if has_nulls or (elements["length"] != 8).any():
        raise ValueError("a double precision[] with NULL elements")
    return elements["value"].astype(np.float64)


def copy_data(bucket: dt.datetime, rows: list[tuple[str, str, str, int, np.ndarray]]) -> bytes:
    """The binary COPY stream of `rows` (tenant, model, version, n, vector_sum) of minute `bucket`."""
    micros = (bucket - _POSTGRES_EPOCH) // dt.timedelta(microseconds=1)
    start = struct.pack("!hiq", 6, 8, micros)
    parts = [_SIGNATURE]
    for tenant, model, version, n, vector_sum in rows:
        parts += [start, _text(tenant), _text(model), _text(version), struct.pack("!iq", 8, n)]
        parts.append(_float8_array(vector_sum))
    parts.append(_TRAILER)
    return b"".join(parts)


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
                self._db.copy_binary(COPY, copy_data(bucket, [(*key, *pending[key]) for key in chunk]))
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
