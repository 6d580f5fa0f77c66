"""Statistics a router worker sums in memory and writes once a minute, one row per key: the live
embedding centroids (inferencedb/centroids.py) and the answer counts (inferencedb/answer_counts.py).

Rows go in PostgreSQL's binary COPY format, `rows_per_statement` to a statement so that each
transaction stays small, with a pause for request threads between statements. Both are
best-effort statistics: the sums a failed statement did not write are kept, merged into the
next flush and logged (a missing grant or table shows in the log every minute until fixed), and
the database is never waited for on a request.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
import threading
import time
from collections.abc import Hashable, Iterable

from inferencedb.database import Database
from inferencedb.errors import DatabaseUnavailable
from inferencedb.prediction_record import storable_text

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # no OIDs, no header extension
TRAILER = struct.pack("!h", -1)
NULL = struct.pack("!i", -1)
_POSTGRES_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
log = logging.getLogger(__name__)


def text_field(value: str | None) -> bytes:
    """A text field; NUL and lone surrogates, which PostgreSQL cannot store, become U+FFFD."""
    if value is None:
        return NULL
    data = storable_text(value).encode()
    return struct.pack("!i", len(data)) + data


def int8_field(value: int) -> bytes:
    return struct.pack("!iq", 8, value)


def int2_field(value: int | None) -> bytes:
    return NULL if value is None else struct.pack("!ih", 2, value)


def timestamptz_field(instant: dt.datetime) -> bytes:
    return struct.pack("!iq", 8, (instant - _POSTGRES_EPOCH) // dt.timedelta(microseconds=1))


def copy_stream(field_count: int, rows: Iterable[Iterable[bytes]]) -> bytes:
    """A binary COPY stream of `rows`, each the encoded fields of one row."""
    start = struct.pack("!h", field_count)
    parts = [SIGNATURE]
    for fields in rows:
        parts.append(start)
        parts.extend(fields)
    parts.append(TRAILER)
    return b"".join(parts)


class MinuteSums:
    """Sums per key, written by `flush()` at most once per `flush_interval_s`. A subclass says how
    a value merges into a kept one (`_merge`) and how a minute's rows are encoded (`_copy_data`)."""

    copy_sql: str
    rows_per_statement: int

    def __init__(self, database: Database, *, flush_interval_s: float = 60.0):
        self._db = database
        self._interval = flush_interval_s
        self._sums: dict = {}
        self._lock = threading.Lock()
        self._next_flush = time.monotonic() + flush_interval_s

    def _merge(self, sums: dict, key: Hashable, value) -> None:
        raise NotImplementedError

    def _copy_data(self, bucket: dt.datetime, items: list[tuple]) -> bytes:
        raise NotImplementedError

    def flush(self, *, force: bool = False) -> int:
        """Write the sums gathered since the last flush under the current minute; returns the
        rows written. Those a failed statement did not write are merged into the next flush."""
        if not force and time.monotonic() < self._next_flush:
            return 0
        self._next_flush = time.monotonic() + self._interval
        with self._lock:
            pending, self._sums = self._sums, {}
        bucket = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        keys = list(pending)
        written = 0
        try:
            for start in range(0, len(keys), self.rows_per_statement):
                chunk = keys[start : start + self.rows_per_statement]
                self._db.copy_binary(self.copy_sql, self._copy_data(bucket, [(key, pending[key]) for key in chunk]))
                written += len(chunk)
                time.sleep(0)  # let request threads have the GIL between statements
        except Exception as exc:  # noqa: BLE001 - statistics: kept for the next flush, never raised
            with self._lock:
                for key in keys[written:]:
                    self._merge(self._sums, key, pending[key])
            log_call = log.warning if isinstance(exc, DatabaseUnavailable) else log.exception
            log_call("%s: %d rows kept for the next flush: %s", type(self).__name__, len(keys) - written, exc)
        return written
