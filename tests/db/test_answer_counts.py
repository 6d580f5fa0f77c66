"""The routers' per-minute answer counts: what is counted, in which bucket (the report's), and
that a count a failed statement did not write is kept for the next flush."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import psycopg2
import pytest

from inferencedb import answer_counts
from inferencedb.answer_counts import AnswerCounts, confidence_bucket
from inferencedb.database import Database
from inferencedb.errors import DatabaseUnavailable
from inferencedb.monitoring_report import CONFIDENCE_BUCKET, drift_inputs
from inferencedb.prediction_record import PredictionRecord


def record(label="a", probability=0.95, *, model="m", role="primary", status="ok") -> PredictionRecord:
    return PredictionRecord(
        request_id="r",
        tenant="acme",
        model=model,
        version="v1",
        role=role,
        input_text="t",
        label=label,
        probability=probability,
        status=status,
    )


@pytest.mark.parametrize(
    ("probability", "bucket"),
    [(0.0, 0), (0.0999, 0), (0.5, 5), (0.7, 6), (0.95, 9), (1.0, 9), (None, None), (math.nan, None)],
)
def test_the_confidence_bucket_of_the_stored_float32(probability, bucket):
    assert confidence_bucket(probability) == bucket  # 0.7 is stored as 0.69999999


def test_the_confidence_bucket_is_the_one_the_report_computes_on_the_stored_row(db):
    edges = [k / 10 for k in range(11)]
    near = [float(np.nextafter(np.float32(e), np.float32(d))) for e in edges for d in (0, 2)]
    doubles = [np.nextafter(e, -1.0) for e in edges[1:]] + [np.nextafter(e, 2.0) for e in edges[1:-1]]
    values = sorted(float(v) for v in {*edges, *near, *doubles, 0.29999999, 0.123456789, 0.999999999})
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT {CONFIDENCE_BUCKET} FROM unnest(%s::real[]) WITH ORDINALITY AS v(probability, i) ORDER BY i",
            (values,),
        )
        stored = [row[0] for row in cur.fetchall()]
    assert [confidence_bucket(v) for v in values] == stored


class FlakyDatabase:
    def __init__(self, fail_on_call: int):
        self.calls, self.statements, self._fail_on = 0, 0, fail_on_call

    def copy_binary(self, sql, data):
        self.calls += 1
        if self.calls == self._fail_on:
            raise DatabaseUnavailable("the inference database is unavailable (OperationalError)")
        self.statements += 1


def test_a_failed_flush_keeps_the_counts_for_the_next():
    db = FlakyDatabase(fail_on_call=1)
    counts = AnswerCounts(db)
    counts.add([record(), record(), record("b", 0.3), record(status="embedder_unavailable")])
    assert counts.flush(force=True) == 0  # the statement failed: kept
    counts.add([record()])
    assert counts._sums == {("acme", "m", "v1", "primary", "a", 9): 3, ("acme", "m", "v1", "primary", "b", 3): 1}
    assert counts.flush(force=True) == 2 and db.statements == 1
    assert counts.flush(force=True) == 0 and db.statements == 1  # nothing left, nothing written


def test_the_counts_reach_postgresql_and_read_back_as_drift_inputs(db):
    database = Database(db)
    counts = AnswerCounts(database)
    models = [f"m{i}" for i in range(answer_counts.ROWS_PER_STATEMENT + 3)]  # two statements
    for model in models:
        counts.add([record(model=model), record("b", 0.42, model=model, role="shadow")])
    counts.add([record(None, None, model="m0"), record("bad\x00label", 0.1, model="m0"), record("c", None, model="m0")])
    now = dt.datetime.now(dt.UTC)
    assert counts.flush(force=True) == 2 * len(models) + 3
    try:
        observed = drift_inputs(database, now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=5), counted=True)
    finally:
        database.close()
    assert set(observed) == {("acme", model) for model in models}
    first = observed["acme", "m0"].groups
    assert first["v1", "primary"].labels == {"a": 1, None: 1, "bad\ufffdlabel": 1, "c": 1}
    assert first["v1", "primary"].confidence == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]  # no bucket without a probability
    assert first["v1", "shadow"].labels == {"b": 1} and first["v1", "shadow"].confidence[4] == 1
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), sum(n), min(bucket_start) = max(bucket_start) FROM answer_counts")
        assert cur.fetchone() == (2 * len(models) + 3, 2 * len(models) + 3, True)
