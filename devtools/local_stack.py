"""The whole system on one machine: `make run` (or `python -m devtools.local_stack`).

1. PostgreSQL: DATABASE_URL if set, else an embedded server with its data in var/pg.
2. The embedding service (`python -m embedder serve`) on a free port.
3. The demo models (heads/demo/*/config.yaml), trained through that embedder the first time.
4. The router under gunicorn on 127.0.0.1:API_PORT (default 8000).
It prints the URLs, the DATABASE_URL, a tenant key and an operator key, and a curl example, and on Ctrl-C (or SIGTERM) stops
everything in reverse order: the router flushes its inference log before PostgreSQL stops.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from devtools.embedder_process import EmbedderProcess
from devtools.processes import GunicornRouter
from devtools.train_job import summary, train_in_subprocess
from heads.registry import ModelStore

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "heads" / "demo"
log = logging.getLogger("local_stack")


def train_missing_demo_models(store: ModelStore, embedder_address: str, cache: Path) -> list[str]:
    """Train each demo model that has no serving version yet; returns the names trained."""
    trained = []
    for config in sorted(DEMO.glob("*/config.yaml")):
        name = config.parent.name
        if store.serving(name) is not None:
            continue
        print(f"training demo model {name} (first start only) ...", flush=True)
        result = train_in_subprocess(config, store, cache=cache, embedder_address=embedder_address)
        print(f"  {summary(result)}", flush=True)
        trained.append(name)
    return trained


DEMO_TENANT = "default"
DEMO_KEYS = ROOT / "var" / "demo-keys.json"


def demo_keys(dsn: str) -> tuple[str, str]:
    """A tenant key and an operator key for the demo: created once, kept in var/demo-keys.json
    (mode 600, git-ignored) so every `make run` prints the same ones while they are valid."""
    from inferencedb import keys
    from inferencedb.errors import InvalidKey
    from inferencedb.migrations import apply_migrations

    apply_migrations(dsn)
    if DEMO_KEYS.is_file():
        saved = json.loads(DEMO_KEYS.read_text())
        ring = keys.load_ring(dsn)
        try:
            ring.authenticate(f"Bearer {saved['tenant']}")
            ring.authenticate(f"Bearer {saved['operator']}")
            return saved["tenant"], saved["operator"]
        except InvalidKey:
            pass  # revoked, or another database: make new ones
    tenant = keys.create_key(dsn, tenant=DEMO_TENANT, description="make run demo")
    operator = keys.create_key(dsn, tenant=None, description="make run demo operator")
    DEMO_KEYS.parent.mkdir(parents=True, exist_ok=True)
    DEMO_KEYS.touch(mode=0o600)
    DEMO_KEYS.write_text(json.dumps({"tenant": tenant, "operator": operator}))
    return tenant, operator


def _interrupt(signum, frame) -> None:
    """The first Ctrl-C or SIGTERM stops the stack wherever it is, starting included; later ones
    are ignored, so that they cannot cut the orderly stop short (each step of it is bounded). No
    lock is taken here: a handler that takes one deadlocks when a second signal interrupts it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.local_stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", "8000")))
    parser.add_argument("--store", default=os.environ.get("MODEL_STORE", "var/models"))
    parser.add_argument("--no-demo", action="store_true", help="do not train the demo models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    logs = ROOT / "var" / "log"
    logs.mkdir(parents=True, exist_ok=True)
    postgres = embedder = router = None
    try:
        dsn = os.environ.get("DATABASE_URL", "")
        if not dsn:
            from devtools.postgres_local import LocalPostgres

            postgres = LocalPostgres(ROOT / "var" / "pg")
            dsn = postgres.start()
        print(f"PostgreSQL    {dsn}", flush=True)
        embedder = EmbedderProcess({"EMBEDDER_METRICS_PORT": "0"}, log_path=logs / "embedder.log")
        embedder.start()  # assigned first: an interrupted start is still stopped below
        print(
            f"embedder      {embedder.address} (gRPC), metrics http://127.0.0.1:{embedder.metrics_port}/metrics",
            flush=True,
        )
        store = ModelStore.for_tenant(args.store, DEMO_TENANT)
        if not args.no_demo:
            train_missing_demo_models(store, embedder.address, ROOT / "var" / "cache" / "embeddings")
        tenant_key, operator_key = demo_keys(dsn)
        env = {"DATABASE_URL": dsn, "EMBEDDER_ADDRESS": embedder.address, "MODEL_STORE": str(args.store)}
        router = GunicornRouter(env, logs / "router.log", port=args.port)
        router.start(timeout_s=120)
        base = router.url
        models = store.models()
        example = models[0] if models else "MODEL"
        print(
            f"router        {base}  (models: {', '.join(models) or 'none'})\n"
            f"              {base}/v1/models  {base}/openapi.json  {base}/metrics  {base}/readyz\n"
            f"DATABASE_URL={dsn}\n\n"
            f"API keys (also in {DEMO_KEYS.relative_to(ROOT)}):\n"
            f"  export API_KEY={tenant_key}        # tenant {DEMO_TENANT!r}\n"
            f"  export OPERATOR_KEY={operator_key}   # operator\n\n"
            f'curl -s -X POST {base}/v1/models/{example}/predict -H "Authorization: Bearer $API_KEY" '
            "-H 'Content-Type: application/json' "
            f'-d \'{{"text": "Thanks, but please take me off your list"}}\'\n\n'
            "Ctrl-C stops everything. Logs: var/log/",
            flush=True,
        )
        while router.poll() is None:
            time.sleep(0.5)
        print(f"the router exited with status {router.poll()}; see var/log/router.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, at any point of the start or afterwards
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping ...", flush=True)
        if router is not None:
            router.stop(40)  # SIGTERM: workers flush their inference logs
        if embedder is not None:
            embedder.stop()
        if postgres is not None:
            postgres.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
