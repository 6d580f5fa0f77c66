"""One short real run of loadtests/run_loadtest.py: its own embedder, a quickly trained head,
gunicorn, the test session's PostgreSQL, a few Locust users for a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.db.helpers import query

FIELDS = (
    "requests_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "error_rate",
    "failures",
    "workload",
    "users",
    "duration_s",
    "router_workers",
    "router_threads",
    "integrity",
    "cpu",
)


@pytest.mark.slow
def test_smoke_run_against_a_real_stack(empty_db, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "loadtests/run_loadtest.py",
            "--database-url",
            empty_db,
            "--state-dir",
            str(tmp_path / "state"),
            "--out",
            str(tmp_path / "results"),
            "--quick-model",
            "--models",
            "2",
            "--workers",
            "1",
            "--threads",
            "4",
            "--users",
            "3",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--vocabulary",
            "150",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert all(field in summary for field in FIELDS), sorted(summary)
    assert summary["workload"] == "single" and summary["users"] == 3
    assert (summary["router_workers"], summary["router_threads"]) == (1, 4)
    assert summary["requests"] > 0 and summary["requests_per_s"] > 0
    assert summary["failures"] == 0 and summary["error_rate"] == 0
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
    assert summary["cache_hit_rate"] == 1.0  # the vocabulary was warmed before measuring
    integrity = summary["integrity"]
    assert integrity["ok"] and integrity["rows_match"] and integrity["lost"] == 0
    assert integrity["rows_ok"] == integrity["rows_expected"] > summary["requests"]
    rows = query(empty_db, "SELECT count(*) FROM predictions WHERE request_id LIKE %s", (summary["run_id"] + "-%",))
    assert rows[0][0] == integrity["rows_ok"]
    assert lines[-2].startswith("single, router 1x4") and "rows" in lines[-2]  # the summary line
    results = tmp_path / "results"
    run_dir = next(p for p in results.iterdir() if p.is_dir())
    assert {"summary.json", "timeline.csv", "latency.png"} <= {p.name for p in run_dir.iterdir()}
    assert (results / "runs.csv").read_text().count("\n") == 2  # header + this run
