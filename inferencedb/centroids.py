"""The live embedding centroid: per minute, the sum of the embeddings each model version scored
in this worker, written as one row per version to `embedding_centroids` (inferencedb/migrations/0005).
The monitoring report divides the sums of a window by their count for the centroid that drift is
measured on."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np

from inferencedb.minute_sums import MinuteSums, copy_stream, int8_field, text_field, timestamptz_field

COPY = "COPY embedding_centroids (bucket_start, tenant, model, version, n, vector_sum) FROM STDIN WITH (FORMAT binary)"
# Rows go in PostgreSQL's binary COPY format (inferencedb/minute_sums.py): a row's sums (one per float
# of the head's feature set: 384 for `sentence`, 1,152 for `layers-4-6`) are big-endian doubles that numpy writes in microseconds, where a text literal took about
# 0.18 ms a row to format (and PostgreSQL as long to parse): a router with 10,000 active models
# spent 2 s of CPU a minute per worker on it, in bursts that held the GIL against requests.
# Statements of ROWS_PER_STATEMENT rows (3-9 KB each) keep each transaction small.
ROWS_PER_STATEMENT = 64
_FLOAT8_OID = 701
_ARRAY_HEADER = struct.Struct("!iiiii")  # dimensions, has-nulls flag, element type, length, lower bound
_FLOAT8_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])


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


class CentroidAccumulator(MinuteSums):
    """Per (tenant, model, version): how many embeddings were scored and their float64 sum."""

    copy_sql = COPY
    rows_per_statement = ROWS_PER_STATEMENT

    def add(self, tenant: str, model: str, version: str, vectors: np.ndarray) -> None:
        total = vectors.sum(axis=0, dtype=np.float64)
        with self._lock:
            self._merge(self._sums, (tenant, model, version), (len(vectors), total))

    def _merge(self, sums: dict, key: tuple[str, str, str], value: tuple[int, np.ndarray]) -> None:
        n, total = value
        entry = sums.get(key)
        if entry is None:
            sums[key] = [n, total]
        else:
            entry[0] += n
            entry[1] = entry[1] + total

    def _copy_data(self, bucket: dt.datetime, items: list[tuple]) -> bytes:
        start = timestamptz_field(bucket)
        return copy_stream(
            6,
            (
                (start, text_field(tenant), text_field(model), text_field(version), int8_field(n), _float8_array(total))
                for (tenant, model, version), (n, total) in items
            ),
        )
