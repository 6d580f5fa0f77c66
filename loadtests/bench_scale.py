"""The router at scale: what N heads cost one router host, against a 3-model router in the same run.

    make bench-scale                      # N = 100, 1,000 and 10,000
    .venv/bin/python loadtests/bench_scale.py --sizes 100 1000 --requests 2000

Every head is a copy of the load test's CLINC150 head (`lt-intents`, 151 intents, trained once
by loadtests/stack.py) under its own name, each with its own weights file (so that memory counts
what N distinct heads would cost; the version's reports are hard links). The stores are kept in
var/bench-scale/ between runs. One embedder, one PostgreSQL (for the API keys and the answers:
a new, empty one each run, see below) and a 3-model router serve throughout; for each N a router
of 2 gunicorn workers starts on an N-model store, and the run reports:

- `ready_s`: from starting gunicorn until /readyz counts N models on 10 answers in a row, the
  router's record of verified weights (heads/known_checksums.py) removed first, so that every
  weights file is hashed (before ready for up to API_WEIGHTS_CHECK_AT_START_S, the rest after);
  `weights_checked_s`: until, further, every worker has computed the
  weights' checksums that a first load leaves for the background (heads/weights_check.py), which
  the idle windows below wait for; `ready_again_s`: the same as `ready_s` for a second start,
  with the record the first left (a restart, or a worker replaced);
- memory: PSS of the router's processes (master and workers, smaps_rollup), in total and per
  worker, at ready (idle) and after the latency run, and the extra over the 3-model router;
- `idle_cores`: the router's CPU time (the scheduler's run time of its threads, which is exact;
  `idle_cores_ticks` gives the kernel's tick-sampled utime + stime of earlier runs beside it)
  over --idle-s seconds without traffic, per second, once
  the store has settled (from --settle-s after ready: the router's API_RESCAN_SETTLE_S counts from
  the scan that loaded the heads, after which it scans the store every 5 minutes instead of every
  30 s); `idle_settling_cores`: the same over the --idle-s seconds right after the weights were checked. With
  --kept-database (the load test's own PostgreSQL) any window can hold the drift monitor's work
  on the answers earlier runs left in the last hour: 10,000 manifests read (their 1,152-float
  centroids parsed from JSON) and PostgreSQL compressing the minute's 9 KB centroid rows, which
  a profile during the warm-up of the third run in an hour showed as most of the CPU;
- latency: --requests single-text predictions, one at a time over keep-alive connections, each to
  a random model, the texts already in the embedder's cache (so the router is what is measured),
  sent alternately to the N-model and the 3-model router in blocks of 20, p50 and p99 of each.
  Every model answers once first (`warm_up_s`): a head's first request maps its weights' pages
  in, a one-off cost per head and host that would otherwise be most of a short run;
- `promotion_s`: from `set_serving` of a new version on one model until 20 answers in a row from
  the router (whichever worker takes them) name the new version.

Prints the CPU's vector flags; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.processes import GunicornRouter  # noqa: E402
from heads import known_checksums, layout  # noqa: E402
from heads.artifact import new_version_id  # noqa: E402
from heads.registry import ModelStore  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402
from loadtests.procfs import memory_of, proc_cpu_seconds, proc_run_seconds  # noqa: E402
from loadtests.stack import BASE_MODEL, TENANT, Stack, empty_database  # noqa: E402

STATE = ROOT / "var" / "bench-scale"
TEXTS = ["what is my account balance", "book a table for two tonight", "play some jazz", "cancel my order"]
BLOCK = 20


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def copy_version(source: Path, target: Path, *, model: str, version: str) -> None:
    """`source` as version `version` of `model`: its own weights file and manifest, the reports
    hard-linked (they are never read while serving)."""
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in source.iterdir():
        if path.name == layout.MANIFEST:
            manifest = json.loads(path.read_text())
            manifest["model"], manifest["version"] = model, version
            (tmp / path.name).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        elif path.name == layout.WEIGHTS:
            shutil.copyfile(path, tmp / path.name)
        else:
            os.link(path, tmp / path.name)
    tmp.rename(target)


def build_store(root: Path, n: int, source: Path, version: str) -> ModelStore:
    """MODEL_STORE `root` with N models s-00000 ... serving a copy of `source` (kept between runs)."""
    store = ModelStore.for_tenant(root, TENANT)
    names = [f"s-{i:05d}" for i in range(n)]
    done = root / f".built-{n}"
    if done.is_file():
        return store
    started = time.monotonic()
    for i, name in enumerate(names):
        target = store.version_dir(name, version)
        if not target.is_dir():
            copy_version(source, target, model=name, version=version)
        if store.serving(name) is None:
            store.set_serving(name, version, reason="bench-scale copy")
        if (i + 1) % 1000 == 0:
            progress(f"  store of {n}: {i + 1} models ({time.monotonic() - started:.0f} s)")
    done.write_text("")
    return store


class Client:
    """Keep-alive HTTP to one router. A connection left idle for IDLE_REOPEN_S is closed before the
    next request and a new one opened (the 3-model router's client waits while the other router's
    10,000 heads answer once; past gunicorn's keepalive the router has closed it, and the next
    request would fail with a broken pipe)."""

    IDLE_REOPEN_S = 60.0  # below the router's keepalive (75 s, api/web/gunicorn_conf.py)

    def __init__(self, url: str, key: str):
        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._used = time.monotonic()

    def _fresh(self) -> http.client.HTTPConnection:
        """The connection, reopened first when idle too long (idle counts from the last request's
        start: a request lasts milliseconds, and counting them in only reopens a little early)."""
        now = time.monotonic()
        if now - self._used > self.IDLE_REOPEN_S:
            self._conn.close()
            self._conn.connect()  # before a predict's clock starts
        self._used = now
        return self._conn

    def get(self, path: str) -> tuple[int, dict]:
        conn = self._fresh()
        conn.request("GET", path, headers=self._headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def predict(self, model: str, text: str) -> tuple[int, dict, float]:
        body = json.dumps({"text": text})
        conn = self._fresh()
        started = time.perf_counter()
        conn.request("POST", f"/v1/models/{model}/predict", body=body, headers=self._headers)
        response = conn.getresponse()
        payload = response.read()
        took = time.perf_counter() - started
        return response.status, json.loads(payload or b"{}"), took

    def close(self) -> None:
        self._conn.close()


def start_router(stack: Stack, store_root: Path, name: str, timeout_s: float) -> tuple[GunicornRouter, float]:
    spool = STATE / f"spool-{name}"
    spool.mkdir(parents=True, exist_ok=True)
    env = {
        "DATABASE_URL": stack.dsn,
        "EMBEDDER_ADDRESS": stack.embedder_address,
        "MODEL_STORE": str(store_root),
        "API_SPOOL_DIR": str(spool),
        "API_WORKERS": "2",
        "API_THREADS": "8",
        "API_ACCESS_LOG": None,
    }
    started = time.monotonic()
    router = GunicornRouter(env, stack.logs / f"bench-scale-{name}.log").start(timeout_s)
    return router, started


def wait_all_loaded(
    router: GunicornRouter, key: str, expected: int, started: float, timeout_s: float, *, checked: bool = False
) -> float:
    """Seconds from `started` until /readyz counted `expected` models 10 times in a row (and,
    `checked`, no head whose weights' checksum is still to be computed)."""
    client = Client(router.url, key)
    in_a_row, deadline = 0, started + timeout_s
    try:
        while in_a_row < 10:
            if time.monotonic() > deadline:
                what = "check the weights of" if checked else "load"
                raise SystemExit(f"the router did not {what} {expected} models within {timeout_s:.0f} s")
            # A new connection each time: gunicorn hands it to either worker.
            client.close()
            status, body = client.get("/readyz")
            done = status == 200 and body.get("models") == expected
            done = done and (not checked or body.get("unchecked_weights") == 0)
            in_a_row = in_a_row + 1 if done else 0
            if not in_a_row:
                time.sleep(0.05)
        return time.monotonic() - started
    finally:
        client.close()


def idle_cpu(router: GunicornRouter, seconds: float) -> tuple[float, float]:
    """The router's processes' CPU time over `seconds` without traffic, per second (cores): (by
    the scheduler's clock, by the kernel's tick-sampled utime + stime)."""
    pids = router.pids()
    run0, cpu0, t0 = proc_run_seconds(pids), proc_cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    run1, cpu1, elapsed = proc_run_seconds(pids), proc_cpu_seconds(pids), time.monotonic() - t0
    return (run1 - run0) / elapsed, (cpu1 - cpu0) / elapsed


def router_memory(router: GunicornRouter) -> dict:
    workers = router.workers()
    total, per_worker = memory_of(router.pids()), [memory_of([pid]) for pid in workers]
    return {
        "pss_mib": round(total.pss / 2**20, 1),
        "rss_mib": round(total.rss / 2**20, 1),
        "worker_pss_mib": [round(m.pss / 2**20, 1) for m in per_worker],
        "workers": len(workers),
    }


def latencies(clients: dict[str, tuple[Client, list[str]]], requests: int, seed: int) -> dict[str, list[float]]:
    """Alternate blocks of single-text predictions between the routers; seconds per request."""
    rng = random.Random(seed)
    out: dict[str, list[float]] = {name: [] for name in clients}
    while min(len(v) for v in out.values()) < requests:
        for name, (client, models) in clients.items():
            for _ in range(BLOCK):
                status, body, took = client.predict(rng.choice(models), rng.choice(TEXTS))
                if status != 200:
                    raise SystemExit(f"{name}: {status} {body}")
                out[name].append(took)
    return out


def percentile_ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2)


def promotion_seconds(store: ModelStore, router: GunicornRouter, key: str, model: str, source: Path) -> float:
    version = new_version_id()
    copy_version(source, store.version_dir(model, version), model=model, version=version)
    client = Client(router.url, key)
    try:
        started = time.monotonic()
        store.set_serving(model, version, reason="bench-scale promotion")
        in_a_row = 0
        while in_a_row < 20:
            client.close()  # a new connection per request: either worker may take it
            status, body, _ = client.predict(model, TEXTS[0])
            in_a_row = in_a_row + 1 if status == 200 and body.get("version") == version else 0
            if time.monotonic() - started > 60:
                raise SystemExit("the promotion was not served by every worker within 60 s")
        return round(time.monotonic() - started, 3)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--requests", type=int, default=2000, help="predictions per router for the latency")
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument(
        "--settle-s",
        type=float,
        default=125.0,
        help="from the weights checked until the settled idle window (at least API_RESCAN_SETTLE_S + 5 after the start)",
    )
    parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    parser.add_argument(
        "--kept-database",
        action="store_true",
        help="the load test's own PostgreSQL, with earlier runs' answers, instead of a new, empty one",
    )
    args = parser.parse_args()

    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    STATE.mkdir(parents=True, exist_ok=True)
    results: dict = {"cpu_flags": flags, "cores": os.cpu_count(), "requests": args.requests, "sizes": {}}
    with contextlib.ExitStack() as cleanup:
        dsn = "" if args.kept_database else cleanup.enter_context(empty_database("pg-bench-scale"))
        # PostgreSQL for the keys and the answers, the embedder, and lt-intents
        stack = cleanup.enter_context(Stack(database_url=dsn))
        base = stack.store.serving_version(BASE_MODEL)
        source = stack.store.version_dir(BASE_MODEL, base)
        progress("building the 3-model store ...")
        small = build_store(STATE / "stores" / "n3", 3, source, base)
        small_router, started = start_router(stack, STATE / "stores" / "n3", "n3", args.ready_timeout_s)
        try:
            wait_all_loaded(small_router, stack.operator_key, 3, started, args.ready_timeout_s)
            small_models = small.models()
            warm = Client(small_router.url, stack.api_key)
            for text in TEXTS:  # every text in the embedder's cache from now on
                warm.predict(small_models[0], text)
            warm.close()
            baseline_memory = router_memory(small_router)
            results["three_models"] = {"memory": baseline_memory}
            for n in args.sizes:
                progress(f"N={n}: building the store (first run only) ...")
                store = build_store(STATE / "stores" / f"n{n}", n, source, base)
                models = store.models()
                progress(f"N={n}: starting the router ...")
                # a first start: no weights verified yet on this host (heads/known_checksums.py)
                (STATE / f"spool-n{n}" / known_checksums.FILE_NAME).unlink(missing_ok=True)
                router, started = start_router(stack, STATE / "stores" / f"n{n}", f"n{n}", args.ready_timeout_s)
                try:
                    ready_s = wait_all_loaded(router, stack.operator_key, n, started, args.ready_timeout_s)
                    # the weights' checksums left for the background (heads/weights_check.py) done
                    checked_s = wait_all_loaded(
                        router, stack.operator_key, n, started, args.ready_timeout_s * 4, checked=True
                    )
                    time.sleep(2.0)
                    idle_memory = router_memory(router)
                    idle_settling_cores, idle_settling_ticks = idle_cpu(router, args.idle_s)
                    time.sleep(max(0.0, started + checked_s + args.settle_s - time.monotonic()))
                    idle_cores, idle_ticks = idle_cpu(router, args.idle_s)
                    progress(
                        f"N={n}: ready in {ready_s:.1f} s, weights checked at {checked_s:.1f} s, idle {idle_cores:.4f} cores "
                        f"({idle_settling_cores:.4f} while settling), {idle_memory}"
                    )
                    clients = {
                        "n": (Client(router.url, stack.api_key), models),
                        "three": (Client(small_router.url, stack.api_key), small_models),
                    }
                    warm_started = time.monotonic()
                    for model in models:
                        clients["n"][0].predict(model, TEXTS[0])
                    warm_up_s = time.monotonic() - warm_started
                    taken = latencies(clients, args.requests, seed=n)
                    for client, _ in clients.values():
                        client.close()
                    loaded_memory = router_memory(router)
                    promotion = promotion_seconds(store, router, stack.api_key, models[-1], source)
                finally:
                    router.stop()
                progress(f"N={n}: starting the router again ...")
                router, started = start_router(stack, STATE / "stores" / f"n{n}", f"n{n}", args.ready_timeout_s)
                try:
                    ready_again_s = wait_all_loaded(router, stack.operator_key, n, started, args.ready_timeout_s)
                finally:
                    router.stop()
                entry = {
                    "ready_s": round(ready_s, 1),
                    "weights_checked_s": round(checked_s, 1),
                    "ready_again_s": round(ready_again_s, 1),
                    "idle_cores": round(idle_cores, 4),
                    "idle_settling_cores": round(idle_settling_cores, 4),
                    "idle_cores_ticks": round(idle_ticks, 4),
                    "idle_settling_cores_ticks": round(idle_settling_ticks, 4),
                    "memory_idle": idle_memory,
                    "memory_after_latency_run": loaded_memory,
                    "extra_pss_idle_mib": round(idle_memory["pss_mib"] - baseline_memory["pss_mib"], 1),
                    "extra_pss_after_latency_run_mib": round(loaded_memory["pss_mib"] - baseline_memory["pss_mib"], 1),
                    "p50_ms": percentile_ms(taken["n"], 50),
                    "p99_ms": percentile_ms(taken["n"], 99),
                    "three_models_p50_ms": percentile_ms(taken["three"], 50),
                    "three_models_p99_ms": percentile_ms(taken["three"], 99),
                    "promotion_s": promotion,
                    "warm_up_s": round(warm_up_s, 1),
                }
                entry["p50_ratio"] = round(entry["p50_ms"] / entry["three_models_p50_ms"], 2)
                entry["p99_ratio"] = round(entry["p99_ms"] / entry["three_models_p99_ms"], 2)
                results["sizes"][str(n)] = entry
                progress(f"N={n}: {json.dumps(entry)}")
        finally:
            small_router.stop()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
