"""What PostgreSQL spends storing the routers' centroid rows, with and without a compression attempt.

    .venv/bin/python loadtests/bench_centroid_storage.py [--rows 2000] [--rounds 3]

Every router worker writes one `embedding_centroids` row per active model version a minute: its
count and the sum of the embeddings it scored, 384 or 1,152 doubles (3-9 KB). Values past 2 KB go
out of line, and with PostgreSQL's default storage (EXTENDED) it first tries to compress each;
migration 0011 sets the column to EXTERNAL (out of line, never compressed). On a new, empty
PostgreSQL with the migrations applied, this copies the same --rows rows of 1,152 doubles (as
inferencedb/centroids.py writes them: binary COPY) into the table with each storage in turn,
--rounds times interleaved, and prints the median time of each and the table's size. Prints the
CPU's vector flags and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferencedb.centroids import COPY, CentroidAccumulator  # noqa: E402
from inferencedb.migrations import apply_migrations  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402
from loadtests.stack import empty_database  # noqa: E402

STORAGES = ("EXTENDED", "EXTERNAL")  # PostgreSQL's default for arrays; migration 0011's


def copy_data(rows: int, dim: int) -> bytes:
    rng = np.random.default_rng(13)
    items = [(("bench", f"model-{i:05d}", "v1"), (7, rng.standard_normal(dim) * 7)) for i in range(rows)]
    bucket = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    # the bytes the router's flush sends (its database is not needed to encode them)
    return CentroidAccumulator(database=None)._copy_data(bucket, items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=1152, help="doubles per row (1,152: layers-4-6; 384: sentence)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    data = copy_data(args.rows, args.dim)
    seconds = {storage: [] for storage in STORAGES}
    sizes = {}
    with empty_database("bench-centroid-storage") as dsn:
        apply_migrations(dsn)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            for _ in range(args.rounds):
                for storage in STORAGES:
                    cur.execute(f"ALTER TABLE embedding_centroids ALTER COLUMN vector_sum SET STORAGE {storage}")
                    cur.execute("TRUNCATE embedding_centroids")
                    conn.commit()
                    started = time.perf_counter()
                    cur.copy_expert(COPY, io.BytesIO(data))
                    conn.commit()
                    seconds[storage].append(time.perf_counter() - started)
                    cur.execute("SELECT pg_total_relation_size('embedding_centroids')")
                    sizes[storage] = cur.fetchone()[0]
                    print(f"{storage}: {seconds[storage][-1] * 1000:.0f} ms, {sizes[storage] // 1024} KB", flush=True)
    result = {
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "rows": args.rows,
        "dim": args.dim,
        **{
            storage.lower(): {
                "median_ms": round(statistics.median(seconds[storage]) * 1000, 1),
                "ms": [round(s * 1000, 1) for s in seconds[storage]],
                "table_kb": sizes[storage] // 1024,
            }
            for storage in STORAGES
        },
        "external_over_extended": round(
            statistics.median(b / a for a, b in zip(seconds["EXTENDED"], seconds["EXTERNAL"])), 3
        ),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
