"""The router's own CPU per request, in process: what a cut in the hot path saves, measured
without the noise of a load test on a shared 2-core machine.

    make bench-router
    .venv/bin/python loadtests/bench_router.py --requests 5000 --rounds 5 --profile

The real app (api.web.app:create_app(), the same runtime as under gunicorn: the load test's
PostgreSQL, embedder and 20 copies of its CLINC150 head, started by loadtests/stack.py) is
called through its WSGI entry point with prebuilt request environs, one request at a time on
one thread: single-text predictions to random models, every text already in the worker's
embedding cache (the warm-cache case `make loadtest` measures). What it leaves out is the HTTP
server: gunicorn's parsing, the socket and its threads, which `make loadtest` includes.

Reports the process CPU time per request (the inference log's writer thread included) for each
round and their median, and with --profile the functions with the most CPU time (cProfile, one
extra round). Prints the CPU's vector flags; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heads import layout  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402
from loadtests.generator import vocabulary  # noqa: E402
from loadtests.stack import Stack  # noqa: E402


def predict_environ(model: str, text: str, api_key: str) -> dict:
    """A WSGI environ of POST /v1/models/<model>/predict {"text": text}, as gunicorn builds it."""
    body = json.dumps({"text": text}).encode()
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/v1/models/{model}/predict",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {api_key}",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


class Caller:
    """Calls the app as a WSGI server would and keeps the statuses."""

    def __init__(self, app):
        self.app = app
        self.statuses: list[str] = []

    def _start_response(self, status, headers, exc_info=None):
        self.statuses.append(status)

    def __call__(self, environ: dict) -> bytes:
        return b"".join(self.app.wsgi_app(environ, self._start_response))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per measured round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--vocabulary", type=int, default=500, help="distinct phrases, every one cached first")
    parser.add_argument("--profile", action="store_true", help="one more round under cProfile; prints the top 30")
    args = parser.parse_args()

    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    stack = Stack(models=args.models, embedder_env={}, base=ROOT / "var" / "loadtest")
    with stack:
        os.environ.update(
            DATABASE_URL=stack.dsn,
            EMBEDDER_ADDRESS=stack.embedder_address,
            MODEL_STORE=str(layout.store_root(stack.store.root)),
            API_SPOOL_DIR=str(ROOT / "var" / "loadtest" / "spool-bench-router"),
        )
        from api.web.app import create_app

        app = create_app()
        runtime = app.extensions["manyheads"]
        call = Caller(app)
        try:
            phrases = list(vocabulary(args.vocabulary))
            for model in stack.models:  # every phrase in the embedding cache, every head's pages mapped in
                for text in phrases:
                    call(predict_environ(model, text, stack.api_key))
            rng = random.Random(13)
            per_request_us = []
            for _ in range(args.rounds + args.profile):
                environs = [
                    predict_environ(rng.choice(stack.models), rng.choice(phrases), stack.api_key)
                    for _ in range(args.requests)
                ]
                call.statuses.clear()
                profiler = None
                if len(per_request_us) == args.rounds:
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                started = time.process_time()
                for environ in environs:
                    call(environ)
                cpu_s = time.process_time() - started
                failed = [s for s in call.statuses if not s.startswith("200")]
                if failed:
                    raise SystemExit(f"{len(failed)} requests failed, e.g. {failed[0]}")
                if profiler is not None:
                    import pstats

                    profiler.disable()
                    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
                else:
                    per_request_us.append(cpu_s / args.requests * 1e6)
                    print(f"round {len(per_request_us)}: {per_request_us[-1]:.0f} us CPU per request", flush=True)
        finally:
            runtime.close()
    result = {
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "models": args.models,
        "requests_per_round": args.requests,
        "cpu_us_per_request": [round(x) for x in per_request_us],
        "median_cpu_us_per_request": round(statistics.median(per_request_us)),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
