"""The live-centroid accumulator writes in small statements and keeps what a failed one did not write."""

from __future__ import annotations

import numpy as np

from inferencedb import centroids
from inferencedb.errors import DatabaseUnavailable


class FlakyDatabase:
    def __init__(self, fail_on_call: int):
        self.calls, self.rows, self._fail_on = 0, [], fail_on_call

    def insert_many(self, sql, rows):
        self.calls += 1
        if self.calls == self._fail_on:
            raise DatabaseUnavailable("the inference database is unavailable (OperationalError)")
        self.rows.extend(rows)


def test_a_flush_of_many_models_is_cut_into_statements_and_a_failure_loses_nothing():
    db = FlakyDatabase(fail_on_call=2)
    accumulator = centroids.CentroidAccumulator(db)
    models = [f"m{i}" for i in range(centroids.ROWS_PER_STATEMENT * 2 + 5)]
    for model in models:
        accumulator.add("acme", model, "v1", np.ones((2, 3), np.float32))
    assert accumulator.flush(force=True) == centroids.ROWS_PER_STATEMENT  # the second statement failed
    accumulator.add("acme", models[-1], "v1", np.ones((1, 3), np.float32))  # more traffic meanwhile
    assert accumulator.flush(force=True) == len(models) - centroids.ROWS_PER_STATEMENT
    assert sorted(row[2] for row in db.rows) == sorted(models)  # every model once, none lost
    last = next(row for row in db.rows if row[2] == models[-1])
    assert last[4] == 3 and last[5] == [3.0, 3.0, 3.0]  # merged with the sums that were kept
