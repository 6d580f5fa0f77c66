"""What the router's Prometheus metrics cost at N models: one /metrics render, and the first
answer of each model.

    make bench-metrics                                   # N = 1,000 and 10,000
    .venv/bin/python loadtests/bench_metrics.py --models 100 1000 --workers 2

As under gunicorn (api/web/gunicorn_conf.py), the metrics live in one folder of per-process
files (prometheus_client's multiprocess mode). For each N, --workers processes each record one
answered request for every one of N models with `api.core.metrics.record_answer` (what
api/web/routes_predict.py calls), as each worker of a router does once every model has answered
there; then this process renders the folder as `/metrics` does (`api.core.metrics.render`),
--renders times. Reports per N: the series rendered (lines), the bytes of the page, the render's
CPU time (median), the files' size (as allocated: prometheus_client grows them 1 MiB at a time),
and the CPU time of the first answer's metrics per model (a series' first write grows its
process's file). The metrics collector of the deployment scrapes every minute with a 10 s
timeout (terraform/modules/router/metrics.tf), and the render runs on a thread of a serving
worker.

Prints the CPU's vector flags; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench_batching import cpu_flags  # noqa: E402

TENANT = "bench"


def record(models: int) -> float:
    """In a worker process: one answer's metrics for each model; the CPU seconds it took."""
    from api.core import metrics

    started = time.process_time()
    for i in range(models):
        metrics.record_answer(
            f"{TENANT}/model-{i:05d}",
            TENANT,
            seconds=0.0008,
            embed_seconds=0.0001,
            head_seconds=0.00002,
            version="20261201T000000000Z-0000",
            role="primary",
            texts=1,
        )
    return time.process_time() - started


def render(renders: int) -> dict:
    from api.core import metrics

    seconds, page = [], b""
    for _ in range(renders):
        started = time.process_time()
        page, _ = metrics.render()
        seconds.append(time.process_time() - started)
    return {"render_cpu_s": round(statistics.median(seconds), 3), "page_bytes": len(page), "lines": page.count(b"\n")}


def measure(models: int, workers: int, renders: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as folder:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
        first_answers = []
        for _ in range(workers):  # one process each: its own pid, its own files
            out = subprocess.run(
                [sys.executable, __file__, "--record", str(models)], env=env, capture_output=True, text=True, check=True
            )
            first_answers.append(float(out.stdout.split()[-1]))
        out = subprocess.run(
            [sys.executable, __file__, "--render", str(renders)], env=env, capture_output=True, text=True, check=True
        )
        files = sum(path.stat().st_size for path in Path(folder).iterdir())
    return json.loads(out.stdout.splitlines()[-1]) | {
        "files_bytes": files,
        "first_answer_metrics_us": round(statistics.median(first_answers) / models * 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, default=2, help="router worker processes, each with its files")
    parser.add_argument("--renders", type=int, default=3)
    parser.add_argument("--record", type=int, help=argparse.SUPPRESS)  # internal: a worker process
    parser.add_argument("--render", type=int, help=argparse.SUPPRESS)  # internal: the rendering process
    args = parser.parse_args()
    if args.record is not None:
        print(record(args.record))
        return 0
    if args.render is not None:
        print(json.dumps(render(args.render)))
        return 0

    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    results = {}
    for models in args.models:
        results[models] = measure(models, args.workers, args.renders)
        print(f"{models} models: {json.dumps(results[models])}", flush=True)
    print(json.dumps({"cpu_flags": flags, "workers": args.workers, "models": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
