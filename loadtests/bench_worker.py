"""The router's gunicorn worker (api/web/pool_worker.py) against gunicorn's gthread worker, on a
WSGI app that does next to nothing, so what is measured is the worker's own cost per request.

    make bench-worker
    .venv/bin/python loadtests/bench_worker.py --rounds 3 --duration 10

Both run under the router's gunicorn configuration (api/web/gunicorn_conf.py: 2 workers x 8
threads by default), gthread chosen with --worker-class in GUNICORN_CMD_ARGS. Per round, for each
worker class in turn (the order alternates between rounds): a closed loop of --users keep-alive
connections for --duration s (capacity, and CPU per answer), then an open loop of Poisson
arrivals at --share of the lower of the two capacities that round measured, the same rate for
both classes (loadtests/open_loop.py's client: a pool of keep-alive connections, latency from
each request's scheduled instant). CPU is the gunicorn processes' (master and workers) from
/proc.

The app (loadtests/bench_worker_app.py) answers every request with a 200 and a 300-byte JSON
body, the size of a prediction's answer.

The client shares the machine's cores: its CPU per request is printed with the figures. Prints
the CPU's vector flags; the last line of output is one JSON object with every round and, per
class, the medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.processes import GunicornRouter  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402
from loadtests.open_loop import Client, closed_loop, measured, open_loop  # noqa: E402

APP = "loadtests.bench_worker_app:app"
CLASSES = {"pool": None, "gthread": "gthread"}  # None: the configuration's own (PoolThreadWorker)


async def figures(server: GunicornRouter, phase) -> dict:
    """open_loop.measured's figures of one phase, those this benchmark reports."""
    summary = (await measured(server.pids(), phase)).summary()
    return {
        key: summary[key]
        for key in ("answers_per_s", "p50_ms", "p99_ms", "max_ms", "errors", "router_cpu_ms_per_answer", "client_cores")
    }


def start(worker_class: str | None, args, log_dir: Path) -> GunicornRouter:
    env = {
        "API_WORKERS": str(args.workers),
        "API_THREADS": str(args.threads),
        "GUNICORN_CMD_ARGS": f"--worker-class {worker_class}" if worker_class else None,
    }
    return GunicornRouter(env, log_dir / f"{worker_class or 'pool'}.log", app=APP).start(60)


async def one_round(servers: dict[str, GunicornRouter], order: list[str], args, seed: int) -> dict:
    clients = {}
    for name in order:
        host, port = servers[name].url.removeprefix("http://").rsplit(":", 1)
        clients[name] = Client(host, int(port), "bench", ["m"], args.max_connections)
    result = {name: {} for name in order}
    for name in order:  # capacity
        await closed_loop(clients[name], args.users, 2.0, seed)  # warm-up
        clients[name].close()
        result[name]["closed_loop"] = await figures(
            servers[name], closed_loop(clients[name], args.users, args.duration, seed)
        )
        clients[name].close()
    rate = args.share * min(result[name]["closed_loop"]["answers_per_s"] for name in order)
    for name in order:
        result[name]["open_loop"] = {
            "offered_per_s": round(rate, 1),
            **await figures(servers[name], open_loop(clients[name], rate, args.duration, seed)),
        }
        clients[name].close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each phase")
    parser.add_argument("--users", type=int, default=8, help="connections of the closed loop")
    parser.add_argument("--share", type=float, default=0.6, help="open-loop rate, as a share of the lower capacity")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--max-connections", type=int, default=64, help="the open loop's connection pool")
    args = parser.parse_args()

    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as logs:
        servers = {name: start(worker_class, args, Path(logs)) for name, worker_class in CLASSES.items()}
        try:
            for r in range(args.rounds):
                order = list(CLASSES) if r % 2 == 0 else list(reversed(CLASSES))
                rounds.append(asyncio.run(one_round(servers, order, args, seed=100 + r)))
                print(f"round {r + 1}: {json.dumps(rounds[-1])}", flush=True)
        finally:
            for server in servers.values():
                server.stop(15)
    medians = {
        name: {
            phase: {
                key: statistics.median(entry[name][phase][key] for entry in rounds)
                for key in ("answers_per_s", "p50_ms", "p99_ms", "router_cpu_ms_per_answer", "client_cores")
            }
            for phase in ("closed_loop", "open_loop")
        }
        for name in CLASSES
    }
    ratio = {
        phase: round(
            statistics.median(
                entry["pool"][phase]["router_cpu_ms_per_answer"] / entry["gthread"][phase]["router_cpu_ms_per_answer"]
                for entry in rounds
            ),
            3,
        )
        for phase in ("closed_loop", "open_loop")
    }
    print(
        json.dumps(
            {"cpu_flags": flags, "cores": os.cpu_count(), "workers": args.workers, "threads": args.threads}
            | {"users": args.users, "share": args.share, "rounds": rounds, "medians": medians}
            | {"pool_cpu_per_answer_over_gthread": ratio}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
