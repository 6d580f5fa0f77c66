"""The system under test, started for a load test: PostgreSQL, the embedder, N models, the router.

Everything lives under var/loadtest/ (git-ignored) and is reused from run to run:

    var/loadtest/pg/          the PostgreSQL cluster (started and stopped by each run)
    var/loadtest/models/      the model store (MODEL_STORE); the models are the tenant
                              `loadtest`'s: `lt-intents` trained once on CLINC150 (151 intents,
                              train + validation, embeddings cached in var/cache/embeddings), and
                              copies lt-intents-000 ... serving the same version, so "many
                              models" costs no extra training
    var/loadtest/train/       the training config (and the quick-model data)
    var/loadtest/spool/       the router's inference-log spool
    var/loadtest/log/         embedder.log, router.log, train.log

The router runs exactly as deployed: gunicorn with api/web/gunicorn_conf.py (gthread workers), with
DATABASE_URL, EMBEDDER_ADDRESS, MODEL_STORE, API_PORT, API_WORKERS, API_THREADS, API_SPOOL_DIR.
No access log (as in production), so the numbers are not those of a logging benchmark.
Authentication is on, as deployed: each start creates a key for the tenant (whose rate limit is
lifted, so the limiter does not cap what is measured) and an operator key for /metrics, and
revokes both when it stops.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import logging
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from devtools.embedder_process import EmbedderProcess
from devtools.processes import ROUTER_APP, GunicornRouter
from devtools.train_job import summary, train_in_subprocess
from heads import layout
from heads.errors import HeadsError
from heads.manifest import Manifest
from heads.registry import ModelStore

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "var" / "loadtest"
CLINC = ROOT.parent / "shared" / "datasets" / "clinc150"
BASE_MODEL = "lt-intents"
TENANT = "loadtest"
COPY_NAME = re.compile(rf"^{BASE_MODEL}-(\d{{3}})$")
log = logging.getLogger("loadtests.stack")

TRAIN_CONFIG = """\
name: {name}
data:
  train: {clinc}/train.csv
  validation: {clinc}/validation.csv
  test: {clinc}/test.csv
model:
  hidden_layers: [256]
  dropout: 0.3
training:
  epochs: 40
  batch_size: 64
  early_stopping_patience: 4
threshold:
  reject_label: oos
  policy: auto
"""


QUICK_CONFIG = """\
name: {name}
data:
  train: {data}/train.csv
  validation: {data}/validation.csv
model:
  hidden_layers: [32]
training:
  epochs: 8
  batch_size: 32
  early_stopping_patience: 2
threshold:
  reject_label: oos
  policy: auto
"""


def write_quick_data(out: Path, intents: int = 10, per_label: int = 12) -> Path:
    """A small CLINC150 cut (the first `intents` intents + oos, `per_label` rows each) for a
    head that trains in seconds: smoke tests, not measurements of accuracy."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        with open(CLINC / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        chosen = set(sorted({r["label"] for r in rows if r["label"] != "oos"})[:intents]) | {"oos"}
        counts: dict[str, int] = {}
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(("text", "label"))
            for r in rows:
                if r["label"] in chosen and counts.get(r["label"], 0) < per_label:
                    counts[r["label"]] = counts.get(r["label"], 0) + 1
                    writer.writerow((r["text"], r["label"]))
    return out


def copy_names(n: int) -> list[str]:
    return [f"{BASE_MODEL}-{i:03d}" for i in range(n)]


def ensure_base_model(store: ModelStore, embedder_address: str, *, work: Path, logs: Path, quick: bool = False) -> str:
    """Train `lt-intents` on CLINC150 through the running embedder unless it serves already;
    returns its serving version. Training runs in a subprocess (TensorFlow stays out of here).
    `quick`: a tiny head on a small cut of the data (seconds), for smoke tests."""
    state = store.serving(BASE_MODEL)
    if state is not None:
        return state.primary
    if not (CLINC / "train.csv").is_file():
        raise RuntimeError(f"{CLINC}/train.csv is missing: load tests train on ../shared/datasets/clinc150")
    config = work / f"{BASE_MODEL}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    if quick:
        data = write_quick_data(work / "quick-data")
        config.write_text(QUICK_CONFIG.format(name=BASE_MODEL, data=data))
    else:
        config.write_text(TRAIN_CONFIG.format(name=BASE_MODEL, clinc=CLINC))
    what = "a small CLINC150 cut" if quick else "CLINC150 (first run only, a few minutes)"
    print(f"training {BASE_MODEL} on {what} ...", file=sys.stderr, flush=True)
    result = train_in_subprocess(
        config,
        store,
        cache=ROOT / "var" / "cache" / "embeddings",
        embedder_address=embedder_address,
        promote=True,
        log=logs / "train.log",
    )
    print(f"  {summary(result)}", file=sys.stderr, flush=True)
    return store.serving_version(BASE_MODEL)


def _manifest_names(store: ModelStore, name: str, version: str) -> bool:
    try:
        return Manifest.read(store.version_dir(name, version)).model == name
    except (OSError, HeadsError):
        return False


def ensure_model_copies(store: ModelStore, n: int) -> list[str]:
    """Models lt-intents-000 .. lt-intents-{n-1}, each serving a copy of lt-intents' serving
    version; copies numbered n and above are removed, so the router serves exactly these
    (plus lt-intents itself, which the load does not address when n > 0)."""
    version = store.serving_version(BASE_MODEL)
    source = store.version_dir(BASE_MODEL, version)
    names = copy_names(n)
    for name in names:
        state = store.serving(name)
        if state is not None and state.primary == version and _manifest_names(store, name, version):
            continue
        shutil.rmtree(store.version_dir(name, version), ignore_errors=True)
        target = store.version_dir(name, version)
        if not target.is_dir():
            tmp = target.parent / f".{version}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            # The copy is a model of its own: its manifest names it (GET /v1/models shows that name).
            manifest_path = layout.manifest_path(tmp)
            manifest = json.loads(manifest_path.read_text())
            manifest["model"] = name
            manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
            tmp.rename(target)
        store.set_serving(name, version, reason="load-test copy of " + BASE_MODEL)
    if store.root.is_dir():
        for path in store.root.iterdir():
            match = COPY_NAME.match(path.name)
            if match and int(match.group(1)) >= n:
                shutil.rmtree(path)
    return names or [BASE_MODEL]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def start_router(
    env: dict[str, str], workers: int, threads: int, log_path: Path, app: str = ROUTER_APP
) -> GunicornRouter:
    """gunicorn serving `app` (the router by default) with the given workers and threads."""
    sized = {**env, "API_WORKERS": str(workers), "API_THREADS": str(threads), "API_ACCESS_LOG": None}
    return GunicornRouter(sized, log_path, app=app).start(90.0)


class Stack:
    """PostgreSQL + embedder + models; routers are started on top with `start_router()` (a sweep
    restarts the router with other workers/threads and keeps the rest, cache included).

    `database_url` / `embedder_address`: use a server that is already running instead of
    starting one (then nothing is started or stopped for it)."""

    def __init__(
        self,
        *,
        models: int = 20,
        embedder_env: dict[str, str] | None = None,
        base: Path = BASE,
        database_url: str = "",
        embedder_address: str = "",
        quick_model: bool = False,
    ):
        self.base = Path(base)
        self.logs = self.base / "log"
        self.n_models = models
        self.embedder_env = dict(embedder_env or {})
        self.store = ModelStore.for_tenant(self.base / "models", TENANT)
        self.quick_model = quick_model
        self.postgres = None
        self.embedder: EmbedderProcess | None = None
        self.external_embedder = embedder_address
        self.router: GunicornRouter | None = None
        self.dsn = database_url
        self.models: list[str] = []
        self.api_key = ""
        self.operator_key = ""

    @property
    def embedder_address(self) -> str:
        return self.external_embedder or self.embedder.address

    def start(self) -> Stack:
        from devtools.postgres_local import LocalPostgres

        self.logs.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        try:
            if not self.dsn:
                self.postgres = LocalPostgres(self.base / "pg")
                self.dsn = self.postgres.start()
            self._create_keys()
            if not self.external_embedder:
                self.start_embedder(self.embedder_env)
            ensure_base_model(
                self.store, self.embedder_address, work=self.base / "train", logs=self.logs, quick=self.quick_model
            )
            self.models = ensure_model_copies(self.store, self.n_models)
        except BaseException:
            self.stop()
            raise
        return self

    def _create_keys(self) -> None:
        from inferencedb.keys import create_key, set_limits
        from inferencedb.migrations import apply_migrations

        apply_migrations(self.dsn)
        self.api_key = create_key(self.dsn, tenant=TENANT, description="load test")
        self.operator_key = create_key(self.dsn, tenant=None, description="load test: /metrics")
        set_limits(self.dsn, TENANT, rate_rps=1_000_000, burst=1_000_000)

    def _revoke_keys(self) -> None:
        from inferencedb.keys import revoke_key, split_key

        for key in (self.api_key, self.operator_key):
            if key:
                with contextlib.suppress(Exception):  # a stopped or unreachable server: nothing to revoke
                    revoke_key(self.dsn, split_key(key)[0])
        self.api_key = self.operator_key = ""

    def _lock_state_dir(self) -> None:
        """One stack per state dir at a time: two would share (and stop) one PostgreSQL."""
        self._lock_file = open(self.base / ".lock", "w")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise RuntimeError(
                f"another load test is using {self.base}; wait for it, or give this one --state-dir"
            ) from None

    def start_embedder(self, env: dict[str, str]) -> EmbedderProcess:
        """(Re)start our embedder with these settings (its phrase cache starts empty)."""
        if self.external_embedder:
            raise RuntimeError("the embedder is external: its settings cannot be changed from here")
        if self.embedder is not None:
            self.embedder.stop()
        self.embedder_env = dict(env)
        self.embedder = EmbedderProcess(
            {"EMBEDDER_METRICS_PORT": "0", **env}, log_path=self.logs / "embedder.log"
        ).start()
        self.embedder.wait_compiled()  # measurements never share the CPU with XLA's compiler
        return self.embedder

    def stop_embedder(self) -> None:
        """Stop our embedder (e.g. to measure something else on a quiet machine); start_embedder()
        brings it back."""
        if self.embedder is not None:
            self.embedder.stop()
            self.embedder = None

    def start_router(
        self, workers: int, threads: int, extra_env: dict[str, str] | None = None, *, app: str = ""
    ) -> GunicornRouter:
        """gunicorn with `app` (default api.web.app:create_app(); another WSGI factory, e.g. a patched
        router on PYTHONPATH, makes an A/B comparison of a change)."""
        self.stop_router()
        env = {
            "DATABASE_URL": self.dsn,
            "EMBEDDER_ADDRESS": self.embedder_address,
            "MODEL_STORE": str(layout.store_root(self.store.root)),
            "API_SPOOL_DIR": str(self.base / "spool"),
            **(extra_env or {}),
        }
        self.router = start_router(env, workers, threads, self.logs / "router.log", app or ROUTER_APP)
        return self.router

    def stop_router(self) -> None:
        if self.router is not None:
            self.router.stop()
            self.router = None

    def pids(self) -> dict[str, list[int]]:
        """Process ids by component, for CPU accounting."""
        out: dict[str, list[int]] = {}
        if self.router is not None:
            out["router"] = self.router.pids()
        if self.embedder is not None and self.embedder.proc is not None and self.embedder.proc.poll() is None:
            out["embedder"] = [self.embedder.proc.pid]
        if self.postgres is not None:
            from devtools.postgres_local import PidFile

            pid_file = PidFile.read(self.postgres.cluster_dir)
            if pid_file is not None:
                found = subprocess.run(["pgrep", "-P", str(pid_file.pid)], capture_output=True, text=True)
                out["postgres"] = [pid_file.pid, *(int(p) for p in found.stdout.split())]
        return out

    def stop(self) -> None:
        self.stop_router()
        if self.dsn:
            self._revoke_keys()
        self.stop_embedder()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if getattr(self, "_lock_file", None) is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtests.stack`: start the load-test stack and keep it up until Ctrl-C (for
    locust's web UI, or several runs of run_loadtest.py --url against the same warm cache)."""
    import argparse

    from embedder.stop_signals import StopSignals

    parser = argparse.ArgumentParser(prog="python -m loadtests.stack", description=main.__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--embedder-batch", type=int, default=64)
    parser.add_argument("--state-dir", default=str(BASE))
    args = parser.parse_args(argv)
    stop = StopSignals()
    stack = Stack(
        models=args.models,
        embedder_env={"EMBEDDER_MAX_BATCH_SIZE": str(args.embedder_batch)},
        base=Path(args.state_dir),
    )
    with stack:
        router = stack.start_router(args.workers, args.threads)
        print(
            f"router   {router.url} ({args.workers} workers x {args.threads} threads, {len(stack.models)} models)\n"
            f"embedder {stack.embedder_address}\nDATABASE_URL={stack.dsn}\n"
            f"LOADTEST_API_KEY={stack.api_key}\nLOADTEST_OPERATOR_KEY={stack.operator_key}\n"
            f"run (with those two exported): .venv/bin/python loadtests/run_loadtest.py --url {router.url} "
            f"--database-url {stack.dsn}\n"
            f" or: .venv/bin/locust -f loadtests/locustfile.py --host {router.url}\nCtrl-C stops everything.",
            flush=True,
        )
        while stop.wait(0.5) is None:
            if router.proc.poll() is not None:
                print(f"the router exited; see {router.log_path}", file=sys.stderr)
                return 1
    return 0


@contextlib.contextmanager
def empty_database(name: str):
    """The DSN of a new PostgreSQL, deleted after the session. The load test's own keeps every
    earlier run's rows (millions on a developer's machine), and autovacuum of the day's partition
    (and, until the drift monitor read per-minute answer counts, its scans of the last hour) grow
    with them on the 2 cores the router uses: runs of one build gave p99 of 35-483 ms there (405
    and 483 with autovacuum of a 3.2-million-row partition or the drift scan in the run), 25-88 ms
    on an empty database. A fresh clone starts empty too; in a deployment the database has cores
    of its own. `name`: its folder under var/loadtest (one per benchmark, so two never share one)."""
    from devtools.postgres_local import LocalPostgres

    server = LocalPostgres(BASE / name)
    server.destroy()  # what a killed run left
    try:
        yield server.start()
    finally:
        server.destroy()


if __name__ == "__main__":
    sys.exit(main())
