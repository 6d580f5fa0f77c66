"""bench_drift's synthetic hour: the answer counts it derives give the distributions the scan gives."""

import datetime as dt

from inferencedb.database import Database
from inferencedb.monitoring_report import drift_inputs
from loadtests.bench_drift import MODELS, WORKERS, fill


def test_the_filled_hour_reads_the_same_from_both_sources(db):
    until = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    since = until - dt.timedelta(hours=1)
    filled = fill(db, since, until, 6000)
    assert 6300 < filled["predictions"] < 6900 and filled["answer_count_rows"] > 0  # one request in ten shadowed
    database = Database(db)
    try:
        scanned = drift_inputs(database, since, until)
        counted = drift_inputs(database, since, until, counted=True)
        (total,) = database.run("SELECT sum(n) FROM answer_counts", fetch="one")
        (workers,) = database.run(
            "SELECT max(c) FROM (SELECT count(*) AS c FROM answer_counts "
            "GROUP BY bucket_start, tenant, model, version, role, label, confidence_bucket) AS keys",
            fetch="one",
        )
    finally:
        database.close()
    assert len(scanned) == MODELS and total == filled["predictions"] and workers == WORKERS
    for model in scanned.values():  # every model has its shadow and its centroid sums
        assert {role for _, role in model.groups} == {"primary", "shadow"}
        assert model.centroid_sums["v1"][0] == 100 * 60 * WORKERS
    assert {key: model.groups for key, model in scanned.items()} == {
        key: model.groups for key, model in counted.items()
    }
