"""Answer counts per minute: how many answers each model version gave in each role, per label and
confidence bucket, summed in the router worker and written as rows of `answer_counts`
(inferencedb/migrations/0010).

The drift monitor reads its label and confidence distributions from these rows. Scanning the
hour's rows of `predictions` instead made its cost follow the traffic: at 2,000 answers a
second it read 7 million rows every 5 minutes, on the cores the database shares with the rest.
Here a minute costs each worker one row per (version, role, label, bucket) that occurred: the
more answers share a key, the larger the saving (13x at 2,000 requests/s over 20 models; with
very many models of sparse traffic it tends to a row per answer, no worse than the scan). The model report (`/v1/models/<model>/report`) still reads `predictions`, for any
window and with the definitions of the analyst views.

Drift is a statistic, and these counts are kept as the live centroids are: a worker that dies
loses its counts not yet written (the last minute's; the predictions themselves are in the
journal); counts kept through a database outage are written under the minute of the flush that
succeeds; a statement whose commit was not acknowledged is sent again (counted twice).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

import numpy as np

from inferencedb.minute_sums import MinuteSums, copy_stream, int2_field, int8_field, text_field, timestamptz_field
from inferencedb.prediction_record import PredictionRecord

BUCKETS = 10  # 0.1 wide; the last holds 0.9 to 1.0
COPY = (
    "COPY answer_counts (bucket_start, tenant, model, version, role, label, confidence_bucket, n) "
    "FROM STDIN WITH (FORMAT binary)"
)
ROWS_PER_STATEMENT = 2000  # about 60 bytes a row


def confidence_bucket(probability: float | None) -> int | None:
    """The histogram bucket of a probability as the report's query computes it on the stored row
    (inferencedb/monitoring_report.py `CONFIDENCE_BUCKET`): on the `real` column, i.e. on the
    float32 value (0.7 is 0.69999999 there: bucket 6); None without a probability."""
    if probability is None:
        return None
    stored = float(np.float32(probability))
    if not math.isfinite(stored):
        return None
    return min(max(math.floor(stored * BUCKETS), 0), BUCKETS - 1)


class AnswerCounts(MinuteSums):
    """Per (tenant, model, version, role, label, confidence bucket): how many answers."""

    copy_sql = COPY
    rows_per_statement = ROWS_PER_STATEMENT

    def add(self, records: Iterable[PredictionRecord]) -> None:
        """Count the answers (status "ok") among `records`."""
        keys = [
            (r.tenant, r.model, r.version, r.role, r.label, confidence_bucket(r.probability))
            for r in records
            if r.status == "ok"
        ]
        with self._lock:
            for key in keys:
                self._merge(self._sums, key, 1)

    def _merge(self, sums: dict, key: tuple, value: int) -> None:
        sums[key] = sums.get(key, 0) + value

    def _copy_data(self, bucket: dt.datetime, items: list[tuple]) -> bytes:
        start = timestamptz_field(bucket)
        return copy_stream(
            8,
            (
                (
                    start,
                    text_field(tenant),
                    text_field(model),
                    text_field(version),
                    text_field(role),
                    text_field(label),
                    int2_field(confidence),
                    int8_field(n),
                )
                for (tenant, model, version, role, label, confidence), n in items
            ),
        )
