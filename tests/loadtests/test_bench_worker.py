"""The worker benchmark on a short run: both worker classes serve, every answer is counted, and
the output ends with the JSON object the README's figures come from."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_one_short_round_measures_both_workers():
    out = subprocess.run(
        [sys.executable, "loadtests/bench_worker.py", "--rounds", "1", "--duration", "1", "--threads", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    (round_,) = result["rounds"]
    for name in ("pool", "gthread"):
        for phase in ("closed_loop", "open_loop"):
            figures = round_[name][phase]
            assert figures["errors"] == {} and figures["answers_per_s"] > 0, (name, phase, figures)
            assert figures["router_cpu_ms_per_answer"] > 0
    assert round_["pool"]["open_loop"]["offered_per_s"] == round_["gthread"]["open_loop"]["offered_per_s"]
    assert set(result["pool_cpu_per_answer_over_gthread"]) == {"closed_loop", "open_loop"}
