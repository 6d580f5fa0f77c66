"""Why the encoder is central: one embedder + one router for N heads, against N standalone services.

    make bench-central      # or: .venv/bin/python loadtests/bench_central.py [--n 3,21,100] [--duration 30]
    # a smoke run (tiny head trained in seconds, its own state dir):
    .venv/bin/python loadtests/bench_central.py --n 3 --duration 10 --warmup 3 --quick-model --state-dir var/bench-central-smoke

For each N, on the same machine and with the same client:
(a) central: loadtests.stack.Stack (PostgreSQL, the embedder, N copies of the load-test head
    `lt-intents` for the tenant `loadtest`) and a router of --workers x --threads (gunicorn, as
    deployed; it also loads `lt-intents` itself, so it holds N + 1 heads).
(b) standalone: N loadtests/standalone_classifier.py processes, each with its own copy of the
    encoder (same loader, micro-batcher and EMBEDDER_* settings as the embedder, no phrase cache)
    and the head. The central embedder is stopped meanwhile (PostgreSQL stays up for both).
    The first process is started and warmed alone: if N x its RSS exceeds MemAvailable (read
    before it started) minus --memory-margin-gib, the others are not started and the point says
    "does not fit" with the computed figure. They start --start-parallel at a time (loading
    TensorFlow is CPU-heavy), and all are stopped at the end, also on an error or Ctrl-C.

Memory: sums of RSS and PSS (/proc/<pid>/smaps_rollup) right after the load: (a) embedder +
router master and workers, (b) the N processes. PostgreSQL is shown apart and left out of the
ratios (the standalone design needs a database too). RSS counts shared library pages once per
process, PSS shares them out: with N copies of TensorFlow the two differ, PSS is what the
machine pays.

Throughput on the cache-miss path: --concurrency threads (loadtests.closed_loop) send
single-text requests of never-seen texts to heads drawn uniformly among the N, --warmup seconds
unmeasured, then --duration seconds measured: texts/s, p50/p99 latency, errors. Both designs get
the same cores and the same client; the CPU seconds each used in the measured window (its
processes, PostgreSQL, this client, and what other processes took from the machine) are
recorded, and CPU ms per text is the figure that a busy shared machine disturbs least.
--repeats measures each design that many times (fresh texts each time) and keeps the medians.

Progress goes to stderr; a table per N to stdout; the LAST stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench_central_report import Fit, median_runs, point_table, ratios  # noqa: E402
from loadtests.closed_loop import ClosedLoop, Endpoint  # noqa: E402
from loadtests.procfs import (  # noqa: E402
    GIB,
    machine_busy_seconds,
    meminfo,
    memory_of,
    proc_cpu_seconds,
    process_memory,
    self_cpu_seconds,
)
from loadtests.stack import BASE, BASE_MODEL, Stack, ensure_model_copies  # noqa: E402
from loadtests.standalone_classifier import StandaloneProcess  # noqa: E402


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LoadSettings:
    concurrency: int = 16
    warmup_s: float = 5.0
    duration_s: float = 30.0
    repeats: int = 1
    timeout_s: float = 10.0


# --- one measured load -------------------------------------------------------------------------------


def run_load(
    endpoints: list[Endpoint],
    service: dict[str, list[int]],
    others: dict[str, list[int]],
    settings: LoadSettings,
    salt: int,
) -> dict:
    """Warm-up, then the measured window: throughput, latency, errors, and the CPU used by
    `service` (the design measured), `others` (e.g. PostgreSQL), this client, and the rest."""
    groups = {**service, **others}
    with ClosedLoop(endpoints, concurrency=settings.concurrency, salt=salt, timeout_s=settings.timeout_s) as load:
        time.sleep(settings.warmup_s)
        cpu0 = {name: proc_cpu_seconds(pids) for name, pids in groups.items()}
        client0, machine0, t0 = self_cpu_seconds(), machine_busy_seconds(), time.monotonic()
        time.sleep(settings.duration_s)
        t1 = time.monotonic()
        cpu1 = {name: proc_cpu_seconds(pids) for name, pids in groups.items()}
        client1, machine1 = self_cpu_seconds(), machine_busy_seconds()
    stats = load.stats(t0, t1)
    wall = t1 - t0
    used = {name: cpu1[name] - cpu0[name] for name in groups}
    service_s = sum(used[name] for name in service)
    cpu = {f"{name}_cores": round(seconds / wall, 2) for name, seconds in used.items()}
    cpu["service_cores"] = round(service_s / wall, 2)
    cpu["client_cores"] = round((client1 - client0) / wall, 2)
    cpu["machine_busy_cores"] = round((machine1 - machine0) / wall, 2)
    cpu["other_cores"] = round(max(0.0, (machine1 - machine0 - sum(used.values()) - (client1 - client0)) / wall), 2)
    return {
        "texts_per_s": round(stats.texts_per_s, 1),
        "p50_ms": _round(stats.percentile_ms(50)),
        "p99_ms": _round(stats.percentile_ms(99)),
        "ok": stats.ok,
        "errors": stats.errors,
        "error_samples": list(stats.error_samples),
        "seconds": round(wall, 1),
        "service_cpu_ms_per_text": round(1000 * service_s / stats.ok, 2) if stats.ok else None,
        "cpu": cpu,
    }


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


# --- (a) central -----------------------------------------------------------------------------------


def measure_central(stack: Stack, n: int, settings: LoadSettings, salts, *, workers: int, threads: int) -> dict:
    models = ensure_model_copies(stack.store, n)
    if stack.embedder is None:
        progress(f"N={n} (a): starting the embedder ...")
        stack.start_embedder(stack.embedder_env)
    progress(f"N={n} (a): router {workers}x{threads} serving {len(models)} heads (+ {BASE_MODEL}) ...")
    router = stack.start_router(workers, threads)
    try:
        pids = stack.pids()
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        endpoints = [Endpoint.parse(f"{router.url}/v1/models/{m}/predict", headers) for m in models]
        service = {"embedder": pids.get("embedder", []), "router": pids.get("router", [])}
        others = {"postgres": pids.get("postgres", [])}
        runs = []
        for repeat in range(settings.repeats):
            runs.append(run_load(endpoints, service, others, settings, next(salts)))
            progress(f"N={n} (a) repeat {repeat + 1}: {_load_line(runs[-1])}")
        pids = stack.pids()  # after the load: the memory of a serving system
        memory = {name: memory_of(pids.get(name, [])) for name in ("embedder", "router", "postgres")}
    finally:
        stack.stop_router()
    return {
        "heads_loaded": len(models) + 1,
        "router": f"{workers}x{threads}",
        "memory": {
            "total": (memory["embedder"] + memory["router"]).mib(),
            "embedder": memory["embedder"].mib(),
            "router": memory["router"].mib(),
            "postgres": memory["postgres"].mib(),
        },
        "load": median_runs(runs),
    }


def _load_line(run: dict) -> str:
    return (
        f"{run['texts_per_s']} texts/s, p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, errors {run['errors']}, "
        f"service {run['cpu']['service_cores']} cores, client {run['cpu']['client_cores']}, "
        f"other {run['cpu']['other_cores']}"
    )


# --- (b) standalone --------------------------------------------------------------------------------


class NotEnoughMemory(RuntimeError):
    pass


class Fleet:
    """Standalone classifiers started `parallel` at a time; every one is stopped on exit, also
    after an error or Ctrl-C (a start that has not begun yet never begins)."""

    def __init__(self, processes: list[StandaloneProcess], *, parallel: int = 2):
        self.processes = processes
        self.parallel = parallel
        self._lock = threading.Lock()
        self._closed = False

    def start(self, processes: list[StandaloneProcess], *, keep_free: int) -> None:
        """Start these (members of the fleet); before each, MemAvailable must exceed
        `keep_free`, else NotEnoughMemory (other processes may take memory meanwhile)."""
        started = [0]

        def start_one(process: StandaloneProcess) -> None:
            with self._lock:
                if self._closed:
                    return
                available = meminfo()["MemAvailable"]
                if available < keep_free:
                    raise NotEnoughMemory(
                        f"MemAvailable fell to {available / GIB:.1f} GiB while starting (keeping "
                        f"{keep_free / GIB:.1f} GiB free): {started[0]} of {len(processes)} more started"
                    )
                process.launch()
            process.wait_ready()
            with self._lock:
                started[0] += 1
                progress(f"  started {started[0]}/{len(processes)} (pid {process.pid}, port {process.port})")

        pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="fleet-start")
        try:
            for future in as_completed([pool.submit(start_one, p) for p in processes]):
                future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        with self._lock:
            self._closed = True
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.stop()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def measure_standalone(
    stack: Stack, n: int, settings: LoadSettings, salts, *, parallel: int, margin: int, others: dict[str, list[int]]
) -> dict:
    processes = [
        StandaloneProcess(
            stack.store.root, BASE_MODEL, env=stack.embedder_env, log_path=stack.logs / f"standalone-{i:03d}.log"
        )
        for i in range(n)
    ]
    with Fleet(processes, parallel=parallel) as fleet:
        available = meminfo()["MemAvailable"]
        progress(f"N={n} (b): starting one standalone classifier (own encoder) ...")
        first = processes[0].start()
        # Its RSS as a serving process: a short burst at the benchmark's concurrency first.
        warm = LoadSettings(settings.concurrency, 0.0, max(settings.warmup_s, 2.0), 1, settings.timeout_s)
        run_load([Endpoint.parse(first.url + "/predict")], {}, {}, warm, next(salts))
        per_process = process_memory(first.pid)
        if per_process is None:
            raise RuntimeError(f"cannot read the memory of the standalone classifier (pid {first.pid})")
        fit = Fit(n, per_process, available, margin)
        progress(f"N={n} (b): {fit.message()}")
        result: dict = {"fits": fit.fits, "fit": fit.to_dict()}
        if not fit.fits:
            return result
        if n > 1:
            progress(f"N={n} (b): starting {n - 1} more, {parallel} at a time ...")
            try:
                fleet.start(processes[1:], keep_free=margin + per_process.rss)
            except NotEnoughMemory as exc:
                progress(f"N={n} (b): {exc}")
                return {**result, "fits": False, "ran_out_while_starting": str(exc)}
        pids = [p.pid for p in processes]
        endpoints = [Endpoint.parse(p.url + "/predict") for p in processes]
        runs = []
        for repeat in range(settings.repeats):
            runs.append(run_load(endpoints, {"standalone": pids}, others, settings, next(salts)))
            progress(f"N={n} (b) repeat {repeat + 1}: {_load_line(runs[-1])}")
        result["memory"] = {"total": memory_of(pids).mib()}
        result["load"] = median_runs(runs)
    return result


def parse_ns(text: str) -> list[int]:
    ns = [int(item) for item in text.split(",") if item.strip()]
    if not ns or min(ns) < 1:
        raise ValueError(f"--n needs positive integers, got {text!r}")
    return ns


# --- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_central.py", description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="3,21,100", help="numbers of classifiers, comma-separated")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per design and repeat")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before each measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads, the same for both designs")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per design (medians are kept)")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request, seconds")
    parser.add_argument("--workers", type=int, default=2, help="(a) router workers")
    parser.add_argument("--threads", type=int, default=8, help="(a) threads per router worker")
    parser.add_argument("--embedder-batch", type=int, default=64, help="EMBEDDER_MAX_BATCH_SIZE for both designs")
    parser.add_argument("--start-parallel", type=int, default=2, help="(b) processes starting at once")
    parser.add_argument("--memory-margin-gib", type=float, default=2.0, help="(b) memory kept free")
    parser.add_argument("--state-dir", default=str(BASE), help="store, PostgreSQL and logs (one run per dir)")
    parser.add_argument("--quick-model", action="store_true", help="tiny head trained in seconds (smoke)")
    args = parser.parse_args(argv)
    try:
        ns = parse_ns(args.n)
    except ValueError as exc:
        parser.error(str(exc))
    settings = LoadSettings(args.concurrency, args.warmup, args.duration, args.repeats, args.timeout)
    margin = int(args.memory_margin_gib * GIB)
    salts = (s % 10_000 for s in itertools.count(random.randrange(10_000)))  # fresh texts per measurement

    def terminate(*_):
        raise KeyboardInterrupt  # unwinds like Ctrl-C: every process started here is stopped

    signal.signal(signal.SIGTERM, terminate)
    memory = meminfo()
    stack = Stack(
        models=ns[0],
        embedder_env={"EMBEDDER_MAX_BATCH_SIZE": str(args.embedder_batch)},
        base=Path(args.state_dir),
        quick_model=args.quick_model,
    )
    points = []
    progress("starting PostgreSQL, the embedder and the models ...")
    with stack:
        for n in ns:
            central = measure_central(stack, n, settings, salts, workers=args.workers, threads=args.threads)
            stack.stop_embedder()  # (b) gets the machine without it
            others = {"postgres": stack.pids().get("postgres", [])}
            standalone = measure_standalone(
                stack, n, settings, salts, parallel=args.start_parallel, margin=margin, others=others
            )
            point = {"n": n, "central": central, "standalone": standalone, "ratios": ratios(central, standalone)}
            points.append(point)
            print(point_table(point) + "\n", flush=True)
    summary = {
        "benchmark": "central-vs-standalone",
        "n": ns,
        "cores": os.cpu_count(),
        "mem_total_gib": round(memory.get("MemTotal", 0) / GIB, 1),
        "mem_available_gib_at_start": round(memory.get("MemAvailable", 0) / GIB, 1),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "repeats": args.repeats,
        "router": f"{args.workers}x{args.threads}",
        "embedder_max_batch_size": args.embedder_batch,
        "quick_model": args.quick_model,
        "points": points,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:  # the stack or a standalone classifier could not start
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: every process started here was stopped", file=sys.stderr)
        sys.exit(130)
