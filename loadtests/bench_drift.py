"""What one run of the drift monitor costs the database: its inputs (`drift_inputs`: the label
and confidence distributions, and the embedding centroids) with the distributions scanned from
the hour's `predictions`, against summed from the routers' per-minute `answer_counts`
(inferencedb/answer_counts.py).

    make bench-drift                                      # 2,000 requests/s for an hour
    .venv/bin/python loadtests/bench_drift.py --per-second 500 --runs 5

Starts a new, empty PostgreSQL (deleted afterwards) and fills the last hour as 2 router workers
under that traffic would: a prediction per request over 20 models of 12 labels, one request in
ten also scored by a shadow version; the embedding centroid rows of each worker, model and
minute; and the answer counts the workers would have written, computed from the same rows (so
both sources give the same distributions, which is checked: it guards the split between the
workers, not the router's counting, which tests/api/test_report.py compares with the scan).
Then runs `drift_inputs` from each source --runs times, alternating, and reports the medians of
the wall time and of the machine's CPU seconds (PostgreSQL's parallel workers included; nothing
else should run meanwhile). Both arms include the same centroid query.

Prints the CPU's vector flags; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.postgres_local import LocalPostgres  # noqa: E402
from inferencedb.database import Database  # noqa: E402
from inferencedb.migrations import apply_migrations  # noqa: E402
from inferencedb.monitoring_report import CONFIDENCE_BUCKET, drift_inputs  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402
from loadtests.procfs import machine_busy_seconds  # noqa: E402

BASE = ROOT / "var" / "loadtest" / "pg-bench-drift"
MODELS, LABELS, WORKERS = 20, 12, 2
# A request a row, spread evenly over [since, until), to model i % MODELS; about one in ten also
# has a shadow's row (version v0) at the same instant, chosen by a hash so that every model has some.
_ROW = """
SELECT gen_random_uuid(), %(since)s + (%(step_us)s * i) * interval '1 microsecond', 'r' || i, 0, 'bench',
       'model-' || (i %% {models}), {version}, {role}, 'what is the balance of account ' || i,
       'label-' || (hashint4(i + {salt}) & 255) %% {labels},
       0.3 + 0.7 * ((hashint4(i + {salt} + 7) & 65535) / 65536.0), '[]'::jsonb, 1.0, 'ok', 'minilm'
FROM generate_series(0, %(rows)s - 1) AS i
"""
FILL_PREDICTIONS = (
    "INSERT INTO predictions (row_id, created_at, request_id, item_index, tenant, model, version, role,"
    " input_text, label, probability, top_k, total_ms, status, embedding_model)"
    + _ROW.format(models=MODELS, labels=LABELS, version="'v1'", role="'primary'", salt=0)
    + "UNION ALL"
    + _ROW.format(models=MODELS, labels=LABELS, version="'v0'", role="'shadow'", salt=1)
    + "WHERE (hashint4(i + 99) & 1023) %% 10 = 0"
)
# The live centroid sums: a row per worker, model (its answering version) and minute.
FILL_CENTROIDS = f"""
INSERT INTO embedding_centroids (bucket_start, tenant, model, version, n, vector_sum)
SELECT %(since)s + m * interval '1 minute', 'bench', 'model-' || k, 'v1', 100,
       ARRAY(SELECT random() + 0 * (m + k + w) FROM generate_series(1, 384))
FROM generate_series(0, 59) AS m, generate_series(0, {MODELS} - 1) AS k, generate_series(1, {WORKERS}) AS w
"""
# What WORKERS workers would have counted: each minute's counts split between them.
FILL_COUNTS = f"""
INSERT INTO answer_counts (bucket_start, tenant, model, version, role, label, confidence_bucket, n)
SELECT minute, tenant, model, version, role, label, bucket, share
FROM (
    SELECT date_trunc('minute', created_at) AS minute, tenant, model, version, role, label,
           {CONFIDENCE_BUCKET} AS bucket,
           count(*) AS n
    FROM predictions WHERE status = 'ok' GROUP BY 1, 2, 3, 4, 5, 6, 7
) counted, LATERAL (
    SELECT n / {WORKERS} + CASE WHEN w < n % {WORKERS} THEN 1 ELSE 0 END AS share
    FROM generate_series(0, {WORKERS} - 1) AS w
) split
WHERE share > 0
"""


def fill(dsn: str, since: dt.datetime, until: dt.datetime, rows: int) -> dict:
    import psycopg2

    step_us = (until - since) / dt.timedelta(microseconds=1) / rows
    started = time.perf_counter()
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT ensure_prediction_partitions(1, 1)")
            cur.execute(FILL_PREDICTIONS, {"since": since, "step_us": step_us, "rows": rows})
            cur.execute(FILL_CENTROIDS, {"since": since})
            cur.execute(FILL_COUNTS)
            cur.execute("VACUUM ANALYZE predictions")
            cur.execute("VACUUM ANALYZE answer_counts")
            cur.execute("VACUUM ANALYZE embedding_centroids")
            cur.execute("SELECT (SELECT count(*) FROM predictions), (SELECT count(*) FROM answer_counts)")
            predictions, count_rows = cur.fetchone()
    finally:
        conn.close()
    return {
        "requests": rows,
        "predictions": predictions,
        "answer_count_rows": count_rows,
        "fill_s": round(time.perf_counter() - started, 1),
    }


def timed(run) -> tuple[float, float, object]:
    busy, started = machine_busy_seconds(), time.perf_counter()
    result = run()
    return time.perf_counter() - started, machine_busy_seconds() - busy, result


def summary(samples: list[tuple[float, float]]) -> dict:
    return {
        "wall_s": round(statistics.median(s[0] for s in samples), 4),
        "cpu_s": round(statistics.median(s[1] for s in samples), 4),
        "runs_wall_s": [round(s[0], 4) for s in samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_drift.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-second", type=int, default=2000, help="requests a second over the hour")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"cpu flags: {' '.join(cpu_flags())}", flush=True)
    server = LocalPostgres(BASE)
    server.destroy()  # what a killed run left
    try:
        dsn = server.start()
        apply_migrations(dsn)
        until = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)  # whole minutes, as counted
        since = until - dt.timedelta(hours=1)
        filled = fill(dsn, since, until, args.per_second * 3600)
        print(f"filled: {json.dumps(filled)}", flush=True)
        database = Database(dsn, timeout_s=600.0)
        scans, sums = [], []
        for _ in range(args.runs):
            wall, cpu, scanned = timed(lambda: drift_inputs(database, since, until))
            scans.append((wall, cpu))
            wall, cpu, counted = timed(lambda: drift_inputs(database, since, until, counted=True))
            sums.append((wall, cpu))
            if {key: model.groups for key, model in scanned.items()} != {
                key: model.groups for key, model in counted.items()
            }:
                raise SystemExit("the answer counts do not give the distributions the scan gives")
        database.close()
    finally:
        server.destroy()
    scan, counts = summary(scans), summary(sums)
    result = {
        "cpu_flags": cpu_flags(),
        **filled,
        "scan_predictions": scan,
        "sum_answer_counts": counts,
        "cpu_ratio": round(scan["cpu_s"] / max(counts["cpu_s"], 1e-9), 1),
        "wall_ratio": round(scan["wall_s"] / max(counts["wall_s"], 1e-9), 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
