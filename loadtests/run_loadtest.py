"""Headless load test of the router: warm-up, measurement, inference-log integrity, one summary.

    # the whole stack started here (PostgreSQL, embedder, 20 models, router 2 workers x 8 threads):
    .venv/bin/python loadtests/run_loadtest.py --workload single --users 32 --duration 30
    # a router that is already running (rows checked if --database-url or DATABASE_URL is given):
    .venv/bin/python loadtests/run_loadtest.py --url http://127.0.0.1:8000 --database-url postgresql://...
    # the sizing grid: router workers x threads, and the embedder's EMBEDDER_MAX_BATCH_SIZE:
    .venv/bin/python loadtests/run_loadtest.py --sweep --grid 1x8,2x8,2x16,3x8 --batch-sizes 32,64

One run:
1. Cache warm-up (unless --cold, or the cache-hostile workload): every phrase of the vocabulary
   goes through the router once, in batch requests, so the embedder's phrase cache holds them all.
2. Load warm-up (--warmup seconds, not measured): users are spawned and run; then every statistic
   is reset.
3. Measurement (--duration seconds): Locust users from loadtests/locustfile.py, in this process
   (FastHttpUser, gevent); every request is timed here, so percentiles are exact, not bucketed.
4. Integrity: after the users stop, the rows of this run (X-Request-ID prefix = run id) are
   counted in PostgreSQL until they match the texts answered 200 (or 20 s pass); /metrics must show
   no inference-log row `lost`, none `overflow_spooled` (the in-memory queue never filled), and
   the queue depth is sampled every 5 seconds.
5. Output: one summary line, then files under loadtests/results/<run>/ (summary.json,
   timeline.csv, latency.png) and a row in loadtests/results/runs.csv, and as the LAST line of
   stdout one JSON object (a sweep: one object with every point under "points").

CPU: the seconds each component used during the measurement (router master + workers, embedder,
PostgreSQL, this process = Locust) and the whole machine's busy cores; on a shared machine
`other_cores` is what processes outside this test used meanwhile.
"""

from __future__ import annotations

# Locust monkey-patches the standard library for gevent when it is imported: that must happen
# before anything imports socket, ssl or threading, hence first.
import locust  # isort: skip

import argparse
import contextlib
import csv
import datetime as dt
import json
import math
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.event
import gevent.pool
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.procfs import machine_busy_seconds, proc_cpu_seconds, self_cpu_seconds  # noqa: E402

RESULTS = ROOT / "loadtests" / "results"
WORKLOADS = ("single", "batch", "feedback", "cache_hostile")
PREFILL_CHUNK = 32
PREFILL_CONCURRENCY = 2
# /metrics is scraped this often during a run for the inference-log queue depth. Each scrape
# merges every worker's metric files (about 8% of the router's CPU when done every second at
# 250 req/s), so not more often than a real Prometheus would.
METRICS_INTERVAL_S = 5.0


# --- helpers ---------------------------------------------------------------------------------------


def http_json(url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 30.0):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        with contextlib.suppress(ValueError):
            return error.code, json.loads(error.read() or b"{}")
        return error.code, {}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def scrape_metrics(url: str, operator_key: str = "") -> dict[str, float]:
    """The router's /metrics (an operator endpoint) as {'name{label="v",...}': value} (labels
    sorted), {} on failure or without a key."""
    from prometheus_client.parser import text_string_to_metric_families

    if not operator_key:
        return {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=bearer(operator_key)), timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError, TimeoutError):
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def log_rows(metrics: dict[str, float], event: str) -> float:
    return metrics.get(f'router_inference_log_rows_total{{event="{event}"}}', 0.0)


def code_version() -> str:
    """git describe of the checkout measured ("-dirty": uncommitted changes were measured too)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def rounded(x: float, digits: int = 2) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, digits)


# --- one measurement -------------------------------------------------------------------------------


@dataclass
class Settings:
    workload: str = "single"
    users: int = 32
    spawn_rate: float = 0.0  # 0: all users at once
    duration_s: float = 30.0
    warmup_s: float = 10.0
    rate_per_user: float = 0.0
    exponent: float = 1.0
    vocabulary: int = 5000
    unique_share: float = 0.0
    batch_min: int = 8
    batch_max: int = 32
    max_models: int = 0
    models: str = ""
    seed: int = 0
    cold: bool = False
    feedback: bool = False
    timeout_s: float = 10.0
    extra: dict = field(default_factory=dict)  # recorded as is (router workers/threads, ...)

    def environ(self, run_id: str) -> dict[str, str]:
        return {
            "LOADTEST_WORKLOAD": self.workload,
            "LOADTEST_ZIPF_EXPONENT": str(self.exponent),
            "LOADTEST_VOCABULARY": str(self.vocabulary),
            "LOADTEST_UNIQUE_SHARE": str(self.unique_share),
            "LOADTEST_BATCH_MIN": str(self.batch_min),
            "LOADTEST_BATCH_MAX": str(self.batch_max),
            "LOADTEST_MAX_MODELS": str(self.max_models),
            "LOADTEST_MODELS": self.models,
            "LOADTEST_RATE_PER_USER": str(self.rate_per_user),
            "LOADTEST_SEED": str(self.seed),
            "LOADTEST_RUN_ID": run_id,
            "LOADTEST_FEEDBACK": "1" if self.feedback else "0",
            "LOADTEST_TIMEOUT_S": str(self.timeout_s),
        }


@dataclass
class Target:
    url: str
    dsn: str = ""
    pids: dict[str, list[int]] = field(default_factory=dict)  # component -> pids (own stack only)
    api_key: str = ""  # the tenant whose models are loaded
    operator_key: str = ""  # for /metrics (queue depth, inference-log counters); none: not scraped


def prefill_cache(url: str, models: list[str], phrases: list[str], run_id: str, api_key: str = "") -> dict:
    """Every phrase through the router once (batch requests), so the phrase cache holds them."""
    chunks = [phrases[i : i + PREFILL_CHUNK] for i in range(0, len(phrases), PREFILL_CHUNK)]
    state = {"ok_texts": 0, "hits": 0, "failed_requests": 0}
    started = time.monotonic()

    def send(i: int) -> None:
        for attempt in range(5):
            status, body = http_json(
                f"{url}/v1/models/{models[i % len(models)]}/predict",
                {"texts": chunks[i]},
                {"X-Request-ID": f"{run_id}-warm-{i}-{attempt}", **bearer(api_key)},
            )
            if status == 200:
                state["ok_texts"] += len(chunks[i])
                state["hits"] += sum(1 for p in body["predictions"] if p.get("cache_hit"))
                return
            state["failed_requests"] += 1
            gevent.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"cache warm-up: {url} answered {status}: {body}")

    pool = gevent.pool.Pool(PREFILL_CONCURRENCY)
    for job in [pool.spawn(send, i) for i in range(len(chunks))]:
        job.join()
        if job.exception is not None:
            pool.kill()
            raise job.exception
    state["seconds"] = round(time.monotonic() - started, 1)
    state["hit_rate_before"] = round(state["hits"] / max(1, len(phrases)), 3)
    return state


def count_rows(dsn: str, run_id: str, since: dt.datetime) -> dict[str, int]:
    """This run's rows in `predictions`: `answered` (status ok, role primary/candidate/fallback:
    one per text answered 200), `shadow` (shadow heads' rows), `all`; and `feedback` rows."""
    import psycopg2

    pattern = run_id.replace("_", r"\_") + "-%"
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE status = 'ok' AND role IS DISTINCT FROM 'shadow'), "
                "count(*) FILTER (WHERE role = 'shadow'), count(*) FROM predictions "
                "WHERE created_at >= %s AND request_id LIKE %s",
                (since, pattern),
            )
            answered, shadow, total = cur.fetchone()
            cur.execute("SELECT to_regclass('feedback') IS NOT NULL")
            feedback = 0
            if cur.fetchone()[0]:
                cur.execute("SELECT count(*) FROM feedback WHERE request_id LIKE %s", (pattern,))
                feedback = cur.fetchone()[0]
            return {"answered": int(answered), "shadow": int(shadow), "all": int(total), "feedback": int(feedback)}
    finally:
        conn.close()


def start_profilers(pids: dict[str, list[int]], seconds: float, out_dir: Path) -> list:
    """py-spy on every router worker and the embedder for `seconds` (raw collapsed stacks)."""
    import shutil
    import subprocess

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("note: py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = [("router", pid) for pid in pids.get("router", [])[1:]]  # workers, not the master
    targets += [("embedder", pid) for pid in pids.get("embedder", [])]
    procs = []
    for component, pid in targets:
        path = out_dir / f"profile-{component}-{pid}.txt"
        cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100"]
        cmd += ["--format", "raw", "--gil", "--nonblocking", "--output", str(path)]
        procs.append((component, path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return procs


def summarise_profiles(procs: list, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Per component: the functions with the largest share of samples (inclusive, thread plumbing
    left out), from py-spy's collapsed stacks ("frame;frame;... count")."""
    totals: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    for component, path, proc in procs:
        with contextlib.suppress(Exception):
            proc.wait(30)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            counts[component] = counts.get(component, 0) + int(n)
            seen = set()
            for frame in stack.split(";"):
                name = frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                if name not in seen and not name.endswith(("(threading.py)", "(thread.py)")):
                    seen.add(name)
                    totals.setdefault(component, {})[name] = totals.setdefault(component, {}).get(name, 0) + int(n)
    return {
        c: [(name, round(n / counts[c], 3)) for name, n in sorted(t.items(), key=lambda kv: -kv[1])[:top]]
        for c, t in totals.items()
    }


def measure(target: Target, settings: Settings, out_dir: Path, label: str = "", *, profile: bool = False) -> dict:
    """One run against `target.url`; returns the summary (also written under out_dir)."""
    from locust.env import Environment

    run_id = "lt" + secrets.token_hex(4)
    os.environ.update(settings.environ(run_id), LOADTEST_API_KEY=target.api_key)
    import loadtests.locustfile as lf

    lf.reload()
    user_class = lf.USER_CLASSES[settings.workload]
    lf._load_models(target.url)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    metrics_url = f"{target.url}/metrics"
    before = scrape_metrics(metrics_url, target.operator_key)

    prefill = None
    if not settings.cold and settings.workload != "cache_hostile":
        from loadtests.generator import vocabulary

        prefill = prefill_cache(target.url, lf.MODELS, list(vocabulary(settings.vocabulary)), run_id, target.api_key)
        print(
            f"cache warm-up: {prefill['ok_texts']} phrases in {prefill['seconds']} s "
            f"({prefill['hit_rate_before']:.0%} were cached already)",
            file=sys.stderr,
            flush=True,
        )

    env = Environment(user_classes=[user_class], events=locust.events, host=target.url, stop_timeout=15.0)
    samples: list[tuple[float, float, bool, str]] = []  # (end time, response ms, ok, request name)

    def on_request(response_time, exception, name="", **_kw):
        samples.append((time.time(), response_time, exception is None, name))

    env.events.request.add_listener(on_request)
    queue_depths: list[float] = []
    stop_sampling = gevent.event.Event()

    def sample_queue():
        while not stop_sampling.wait(METRICS_INTERVAL_S):
            m = scrape_metrics(metrics_url, target.operator_key)
            if "router_inference_log_queue_depth" in m:
                queue_depths.append(m["router_inference_log_queue_depth"])

    cpu_seconds: list[tuple[float, float, float]] = []  # (time, machine busy cores, this stack's cores)

    def sample_cpu():
        """Each second: the machine's busy cores and this test's (stack + Locust), so a slow
        second can be told apart from a second when other processes took the CPU."""
        all_pids = [pid for pids in target.pids.values() for pid in pids]
        last = (time.time(), machine_busy_seconds(), proc_cpu_seconds(all_pids) + self_cpu_seconds())
        while not stop_sampling.wait(1.0):
            now = (time.time(), machine_busy_seconds(), proc_cpu_seconds(all_pids) + self_cpu_seconds())
            span = now[0] - last[0]
            cpu_seconds.append((now[0], (now[1] - last[1]) / span, (now[2] - last[2]) / span))
            last = now

    sampler = gevent.spawn(sample_queue)
    cpu_sampler = gevent.spawn(sample_cpu)
    runner = env.create_local_runner()
    try:
        runner.start(settings.users, spawn_rate=settings.spawn_rate or settings.users)
        gevent.sleep(settings.warmup_s)
        env.stats.reset_all()
        samples.clear()
        queue_depths.clear()
        cpu0 = {name: proc_cpu_seconds(pids) for name, pids in target.pids.items()}
        self0, machine0 = self_cpu_seconds(), machine_busy_seconds()
        texts0 = lf.COUNTS["ok_texts"]
        profilers = start_profilers(target.pids, settings.duration_s, out_dir) if profile else []
        t0 = time.time()
        gevent.sleep(settings.duration_s)
        t1 = time.time()
        cpu1 = {name: proc_cpu_seconds(pids) for name, pids in target.pids.items()}
        self1, machine1 = self_cpu_seconds(), machine_busy_seconds()
        texts1 = lf.COUNTS["ok_texts"]
        depth = scrape_metrics(metrics_url, target.operator_key).get("router_inference_log_queue_depth")
        if depth is not None:  # at least one sample, however short the run
            queue_depths.append(depth)
        window = [s for s in samples if s[0] <= t1]
        errors = [
            {"name": e.name, "error": str(e.error)[:200], "occurrences": e.occurrences}
            for e in env.stats.errors.values()
        ]
        runner.stop()  # users finish the request they are in (stop_timeout), so counts are exact
    finally:
        runner.quit()
        env.events.request.remove_listener(on_request)
        stop_sampling.set()
        sampler.join(5)
        cpu_sampler.join(5)

    wall = t1 - t0
    times = np.array([s[1] for s in window], dtype=np.float64)
    ok_mask = np.array([s[2] for s in window], dtype=bool)
    n_requests, n_failures = len(window), int((~ok_mask).sum()) if window else 0
    ok_times = times[ok_mask] if window else times
    cpu = {f"{name}_cores": round((cpu1[name] - cpu0[name]) / wall, 2) for name in cpu0}
    cpu["locust_cores"] = round((self1 - self0) / wall, 2)
    if n_requests:  # CPU milliseconds per request: steadier than req/s on a shared machine
        for name in [*cpu0, "locust"]:
            used = (cpu1[name] - cpu0[name]) if name in cpu0 else (self1 - self0)
            cpu[f"{name}_ms_per_request"] = round(1000 * used / n_requests, 3)
    cpu["machine_busy_cores"] = round((machine1 - machine0) / wall, 2)
    cpu["other_cores"] = round(
        max(
            0.0,
            cpu["machine_busy_cores"]
            - sum(v for k, v in cpu.items() if k.endswith("_cores") and k != "machine_busy_cores"),
        ),
        2,
    )
    cpu["machine_cores"] = os.cpu_count()

    # Integrity: every text answered 200 (warm-up and cache prefill included) is one 'ok' row.
    expected = lf.COUNTS["ok_texts"] + (prefill["ok_texts"] if prefill else 0)
    rows = None
    if target.dsn:
        deadline = time.monotonic() + 20
        while True:
            rows = count_rows(target.dsn, run_id, since)
            if rows["answered"] >= expected or time.monotonic() > deadline:
                break
            gevent.sleep(0.5)
    rows_ok = rows["answered"] if rows else None
    after = scrape_metrics(metrics_url, target.operator_key)

    def delta(event: str) -> int | None:
        if not after:
            return None
        return int(log_rows(after, event) - log_rows(before, event))

    lost, overflow, spooled = delta("lost"), delta("overflow_spooled"), delta("spooled")
    integrity = {
        "rows_expected": expected,
        "rows_ok": rows_ok,
        "rows_total": rows["all"] if rows else None,
        "rows_shadow": rows["shadow"] if rows else None,
        "rows_match": None if rows_ok is None else rows_ok == expected,
        "lost": lost,
        "overflow_spooled": overflow,
        "spooled": spooled,
        "written": delta("written"),
        "queue_depth_max": max(queue_depths) if queue_depths else None,
        "checked_database": bool(target.dsn),
    }
    if lf.COUNTS["feedback_sent"] and rows:
        integrity["feedback_rows_match"] = rows["feedback"] == lf.COUNTS["feedback_ok"]
    integrity["ok"] = bool(
        (integrity["rows_match"] is not False)
        and integrity.get("feedback_rows_match", True)
        and lost == 0
        and overflow == 0
        and (spooled in (0, None))
    )
    hits = lf.COUNTS["cache_hits"] / max(1, lf.COUNTS["ok_texts"])
    summary = {
        "workload": settings.workload,
        "label": label,
        "requests_per_s": rounded(n_requests / wall, 1),
        "texts_per_s": rounded((texts1 - texts0) / wall, 1),
        "p50_ms": rounded(percentile(ok_times, 50)),
        "p95_ms": rounded(percentile(ok_times, 95)),
        "p99_ms": rounded(percentile(ok_times, 99)),
        "max_ms": rounded(float(ok_times.max()) if ok_times.size else float("nan")),
        "mean_ms": rounded(float(ok_times.mean()) if ok_times.size else float("nan")),
        "requests": n_requests,
        "failures": n_failures,
        "error_rate": round(n_failures / n_requests, 6) if n_requests else None,
        "errors": errors[:5],
        "users": settings.users,
        "rate_per_user": settings.rate_per_user,
        "duration_s": round(wall, 1),
        "warmup_s": settings.warmup_s,
        **settings.extra,
        "models_used": len(lf.MODELS),
        "vocabulary": settings.vocabulary,
        "zipf_exponent": settings.exponent,
        "unique_share": 1.0 if settings.workload == "cache_hostile" else settings.unique_share,
        "cache_warmed": prefill is not None,
        "cache_hit_rate": round(hits, 4),
        "integrity": integrity,
        "cpu": cpu,
        "feedback": {
            "sent": lf.COUNTS["feedback_sent"],
            "ok": lf.COUNTS["feedback_ok"],
            "rows": rows["feedback"] if rows else None,
            "endpoint": lf.STATE["feedback_endpoint"],
        }
        if settings.workload == "feedback"
        else None,
        "run_id": run_id,
        "target": target.url,
        "code_version": code_version(),
        "started_at": dt.datetime.fromtimestamp(t0, dt.UTC).isoformat(timespec="seconds"),
    }
    if profilers:
        summary["profile"] = summarise_profiles(profilers)
    names = sorted({w[3] for w in window})
    if len(names) > 1:  # e.g. predictions and feedback: their latencies differ
        summary["by_request"] = {}
        for name in names:
            own = np.array([w[1] for w in window if w[3] == name and w[2]])
            summary["by_request"][name] = {
                "requests": sum(1 for w in window if w[3] == name),
                "failures": sum(1 for w in window if w[3] == name and not w[2]),
                "p50_ms": rounded(percentile(own, 50)),
                "p99_ms": rounded(percentile(own, 99)),
            }
    write_results(out_dir, summary, window, t0, cpu_seconds)
    return summary


# --- output ------------------------------------------------------------------------------------------


def timeline(window: list[tuple], t0: float, seconds: float) -> list[dict]:
    """Per whole second of the measurement (a partial last second is left out)."""
    by_second: dict[int, list[tuple[float, bool]]] = {}
    for end, ms, ok, _name in window:
        second = int(end - t0)
        if second < int(seconds):
            by_second.setdefault(second, []).append((ms, ok))
    rows = []
    for second in sorted(by_second):
        ok_ms = np.array([ms for ms, ok in by_second[second] if ok])
        rows.append(
            {
                "second": second,
                "requests": len(by_second[second]),
                "failures": sum(1 for _, ok in by_second[second] if not ok),
                "p50_ms": rounded(percentile(ok_ms, 50)),
                "p95_ms": rounded(percentile(ok_ms, 95)),
                "p99_ms": rounded(percentile(ok_ms, 99)),
            }
        )
    return rows


def write_results(out_dir: Path, summary: dict, window, t0: float, cpu_seconds=()) -> None:
    """summary.json, timeline.csv, latency.png in out_dir; one row appended to ../runs.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary["results_dir"] = str(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    rows = timeline(window, t0, summary["duration_s"])
    for row in rows:  # the CPU sample that covers the end of that second
        sample = next((c for c in cpu_seconds if c[0] >= t0 + row["second"] + 1), None)
        row["machine_busy_cores"] = round(sample[1], 2) if sample else None
        row["test_cores"] = round(sample[2], 2) if sample else None
        row["other_cores"] = round(max(0.0, sample[1] - sample[2]), 2) if sample else None
    with open(out_dir / "timeline.csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f,
            fieldnames=["second", "requests", "failures", "p50_ms", "p95_ms", "p99_ms"]
            + ["machine_busy_cores", "test_cores", "other_cores"],
        )
        writer.writeheader()
        writer.writerows(rows)
    plot_timeline(rows, out_dir / "latency.png", summary)
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    flat.update({f"integrity_{k}": v for k, v in summary["integrity"].items()})
    flat.update({f"cpu_{k}": v for k, v in summary["cpu"].items()})
    runs = out_dir.parent / "runs.csv"
    header: list[str] = []
    if runs.is_file():
        with open(runs, newline="") as f:
            header = next(csv.reader(f), [])
        if set(flat) - set(header):  # columns changed: keep the old file, start a new one
            runs.rename(runs.with_name(f"runs-until-{dt.datetime.now():%Y%m%d-%H%M%S}.csv"))
            header = []
    with open(runs, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header or list(flat), extrasaction="ignore")
        if not header:
            writer.writeheader()
        writer.writerow(flat)


def plot_timeline(rows: list[dict], path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r["second"] for r in rows]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for key, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
        top.plot(seconds, [r[key] if r[key] is not None else float("nan") for r in rows], style, label=key[:3])
    top.set_ylabel("latency (ms)")
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    middle.plot(seconds, [r["requests"] for r in rows], label="requests/s")
    middle.plot(seconds, [r["failures"] for r in rows], label="failures/s", color="tab:red")
    middle.set_ylabel("per second")
    middle.legend(loc="upper right")
    middle.grid(alpha=0.3)

    def series(key: str) -> list[float]:
        return [r.get(key) if r.get(key) is not None else float("nan") for r in rows]

    bottom.plot(seconds, series("test_cores"), label="this test (stack + Locust)")
    bottom.plot(seconds, series("other_cores"), label="other processes", color="tab:gray")
    bottom.axhline(os.cpu_count() or 0, color="black", linewidth=0.8, linestyle="--")
    bottom.set_ylabel("CPU cores")
    bottom.set_xlabel("second of the measurement")
    bottom.legend(loc="upper right")
    bottom.grid(alpha=0.3)
    fig.suptitle(
        f"{summary['workload']}: {summary.get('router_workers', '?')}x{summary.get('router_threads', '?')} router, "
        f"{summary['users']} users - {summary['requests_per_s']} req/s, p99 {summary['p99_ms']} ms"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_line(s: dict) -> str:
    i = s["integrity"]
    rows = (
        f"rows {i['rows_ok']}/{i['rows_expected']} {'match' if i['rows_match'] else 'MISMATCH'}"
        if i["rows_ok"] is not None
        else "rows not checked (no database URL)"
    )
    router = f"router {s.get('router_workers') or '?'}x{s.get('router_threads') or '?'}"
    batch = f"embedder batch {s.get('embedder_max_batch_size') or '?'}"
    return (
        f"{s['workload']}, {router}, {batch}, {s['users']} users: {s['requests_per_s']} req/s, "
        f"p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms, "
        f"errors {s['failures']}/{s['requests']} ({(s['error_rate'] or 0):.3%}), {rows}, lost {i['lost']}, "
        f"overflow {i['overflow_spooled']}, queue max {i['queue_depth_max']}, cache hits {s['cache_hit_rate']:.1%}, "
        f"cpu router {s['cpu'].get('router_cores', '-')} embedder {s['cpu'].get('embedder_cores', '-')} "
        f"pg {s['cpu'].get('postgres_cores', '-')} locust {s['cpu']['locust_cores']} "
        f"other {s['cpu']['other_cores']} of {s['cpu']['machine_cores']} cores"
    )


def sweep_table(points: list[dict]) -> str:
    header = (
        f"{'batch':>5} {'WxT':>5} {'users':>5} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'err%':>6} {'rows':>5} "
        f"{'router':>6} {'embed':>6} {'pg':>5} {'locust':>6} {'other':>5} {'r-ms/req':>8} {'e-ms/req':>8}"
    )
    lines = [header, "-" * len(header)]
    for s in points:
        c = s["cpu"]
        lines.append(
            f"{s.get('embedder_max_batch_size', '-'):>5} {str(s['router_workers']) + 'x' + str(s['router_threads']):>5} "
            f"{s['users']:>5} "
            f"{s['requests_per_s']:>7} {s['p50_ms']:>6} {s['p95_ms']:>6} {s['p99_ms']:>6} "
            f"{100 * (s['error_rate'] or 0):>6.2f} {'ok' if s['integrity']['ok'] else 'BAD':>5} "
            f"{c.get('router_cores', '-'):>6} {c.get('embedder_cores', '-'):>6} {c.get('postgres_cores', '-'):>5} "
            f"{c['locust_cores']:>6} {c['other_cores']:>5} "
            f"{c.get('router_ms_per_request', '-'):>8} {c.get('embedder_ms_per_request', '-'):>8}"
        )
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------------


def parse_grid(text: str) -> list[tuple[int, int]]:
    grid = []
    for item in text.split(","):
        workers, threads = item.lower().split("x")
        grid.append((int(workers), int(threads)))
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run_loadtest.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    target = parser.add_argument_group("target")
    target.add_argument("--url", help="a running router (default: start the whole stack here)")
    target.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", ""),
        help="PostgreSQL of the router, for the row count (--url mode; default DATABASE_URL); "
        "with the own stack: use this server instead of starting var/loadtest/pg",
    )
    target.add_argument(
        "--api-key",
        default=os.environ.get("LOADTEST_API_KEY", ""),
        help="--url mode: the tenant key whose models are loaded (default LOADTEST_API_KEY)",
    )
    target.add_argument(
        "--operator-key",
        default=os.environ.get("LOADTEST_OPERATOR_KEY", ""),
        help="--url mode: an operator key, to scrape /metrics (default LOADTEST_OPERATOR_KEY; none: not scraped)",
    )
    target.add_argument("--embedder", default="", help="own stack: use this running embedder (host:port)")
    target.add_argument(
        "--workers", type=int, help="own stack: gunicorn workers (API_WORKERS, default 2); --url: recorded only"
    )
    target.add_argument(
        "--threads", type=int, help="own stack: threads per worker (API_THREADS, default 8); --url: recorded only"
    )
    target.add_argument("--models", type=int, default=20, help="own stack: model copies served")
    target.add_argument("--embedder-batch", type=int, default=64, help="own stack: EMBEDDER_MAX_BATCH_SIZE")
    target.add_argument("--state-dir", default=str(ROOT / "var" / "loadtest"), help="own stack: store, pg, logs")
    target.add_argument(
        "--router-app",
        default="",
        help="own stack: gunicorn app spec instead of api.web.app:create_app() (A/B test a patched router)",
    )
    target.add_argument("--quick-model", action="store_true", help="own stack: tiny head trained in seconds (smoke)")
    load = parser.add_argument_group("load")
    load.add_argument("--workload", choices=WORKLOADS, default="single")
    load.add_argument("--users", default="32", help="concurrent users; a comma list measures each in turn")
    load.add_argument("--spawn-rate", type=float, default=0.0, help="users started per second (0: all at once)")
    load.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    load.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    load.add_argument(
        "--rate-per-user", type=float, default=0.0, help="requests/s per user (0: no wait, as fast as answered)"
    )
    load.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent over the vocabulary")
    load.add_argument("--vocabulary", type=int, default=5000, help="distinct real phrases (0: all)")
    load.add_argument("--unique-share", type=float, default=0.0, help="share of cache-hostile texts mixed in")
    load.add_argument("--batch-min", type=int, default=8)
    load.add_argument("--batch-max", type=int, default=32)
    load.add_argument("--max-models", type=int, default=0, help="address only the first N models (0: all)")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--cold", action="store_true", help="do not warm the phrase cache first")
    load.add_argument("--feedback", action="store_true", help="feedback workload: send feedback (needs the endpoint)")
    sweep = parser.add_argument_group("sweep (own stack only)")
    sweep.add_argument("--sweep", action="store_true", help="measure every grid point x batch size")
    sweep.add_argument("--grid", default="1x8,2x8,2x16,3x8", help="router WORKERSxTHREADS points")
    sweep.add_argument("--batch-sizes", default="32,64", help="EMBEDDER_MAX_BATCH_SIZE values")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    parser.add_argument("--label", default="", help="free text recorded in the summary (e.g. the change tested)")
    parser.add_argument(
        "--profile", action="store_true", help="own stack: py-spy the router workers and the embedder while measuring"
    )
    args = parser.parse_args(argv)

    user_counts = [int(u) for u in str(args.users).split(",")]
    if args.url and len(user_counts) > 1:
        parser.error("--url measures one point: give one --users value")
    settings = Settings(
        workload=args.workload,
        users=user_counts[0],
        spawn_rate=args.spawn_rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        rate_per_user=args.rate_per_user,
        exponent=args.zipf,
        vocabulary=args.vocabulary,
        unique_share=args.unique_share,
        batch_min=args.batch_min,
        batch_max=args.batch_max,
        max_models=args.max_models,
        seed=args.seed,
        cold=args.cold,
        feedback=args.feedback,
    )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)

    if args.url:
        if args.sweep:
            parser.error("--sweep starts its own routers and embedders: do not give --url")
        url = args.url.rstrip("/")
        settings.extra = {
            "router_workers": args.workers,
            "router_threads": args.threads,
            "embedder_max_batch_size": args.embedder_batch if "--embedder-batch" in (argv or sys.argv) else None,
        }
        if not args.database_url:
            print("note: no --database-url or DATABASE_URL: rows are not counted", file=sys.stderr)
        target_ = Target(url, args.database_url, api_key=args.api_key, operator_key=args.operator_key)
        result = measure(target_, settings, out / f"{stamp}-{args.workload}-url", args.label)
        print(summary_line(result))
        print(json.dumps(result))
        return 0 if result["failures"] == 0 and result["integrity"]["ok"] else 1

    from loadtests.stack import Stack

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.sweep else [args.embedder_batch]
    grid = parse_grid(args.grid) if args.sweep else [(args.workers or 2, args.threads or 8)]
    stack = Stack(
        models=args.models,
        embedder_env={"EMBEDDER_MAX_BATCH_SIZE": str(batch_sizes[0])},
        base=Path(args.state_dir),
        database_url=args.database_url,
        embedder_address=args.embedder,
        quick_model=args.quick_model,
    )
    points = []
    print("starting PostgreSQL, the embedder and the models ...", file=sys.stderr, flush=True)
    with stack:
        for b_index, batch in enumerate(batch_sizes):
            if b_index > 0:
                stack.start_embedder({"EMBEDDER_MAX_BATCH_SIZE": str(batch)})
            for workers, threads in grid:
                router = stack.start_router(workers, threads, app=args.router_app)
                for users in user_counts:
                    settings.users = users
                    settings.extra = {
                        "router_workers": workers,
                        "router_threads": threads,
                        "embedder_max_batch_size": batch if not args.embedder else None,
                        "models": len(stack.models),
                        "router_app": args.router_app or "api.web.app:create_app()",
                    }
                    target_ = Target(router.url, stack.dsn, stack.pids(), stack.api_key, stack.operator_key)
                    name = f"{stamp}-{args.workload}-{workers}x{threads}-b{batch}-u{users}"
                    print(f"measuring {name} ...", file=sys.stderr, flush=True)
                    result = measure(target_, settings, out / name, args.label, profile=args.profile)
                    print(summary_line(result), flush=True)
                    points.append(result)
                stack.stop_router()
    if len(points) == 1:
        print(json.dumps(points[0]))
        return 0 if points[0]["failures"] == 0 and points[0]["integrity"]["ok"] else 1
    table = sweep_table(points)
    print(table)
    (out / f"{stamp}-sweep-{args.workload}.txt").write_text(table + "\n")
    best = max(points, key=lambda p: p["requests_per_s"] or 0)
    print(
        json.dumps(
            {
                "sweep": True,
                "workload": args.workload,
                "users": user_counts,
                "duration_s": args.duration,
                "best": {k: best[k] for k in ("router_workers", "router_threads", "embedder_max_batch_size", "users")},
                "requests_per_s": best["requests_per_s"],
                "p50_ms": best["p50_ms"],
                "p95_ms": best["p95_ms"],
                "p99_ms": best["p99_ms"],
                "error_rate": best["error_rate"],
                "failures": sum(p["failures"] for p in points),
                "integrity_ok": all(p["integrity"]["ok"] for p in points),
                "points": points,
            }
        )
    )
    return 0 if all(p["failures"] == 0 and p["integrity"]["ok"] for p in points) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:  # the stack could not start, the target is unusable, ...
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
