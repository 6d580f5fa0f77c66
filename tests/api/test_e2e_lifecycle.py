"""Lifecycle on the real stack: the embedder killed mid-traffic (the n-gram fallback answers,
no request fails, the primary takes over again when it returns), and a rollback under traffic."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from devtools.embedder_process import EmbedderProcess
from heads import serving_state
from heads.config import parse_config
from heads.pipeline import train_head
from heads.registry import ModelStore
from inferencedb.keys import create_key
from inferencedb.migrations import apply_migrations
from tests.api.servers import RouterProcess, free_port
from tests.api.test_e2e import NO_RATE_LIMIT, call
from tests.db.helpers import query, wait_until


class Traffic:
    """Threads posting single-text predictions until stopped; keeps every status and variant."""

    def __init__(self, url: str, key: str, threads: int = 4):
        self.url, self.key, self.results, self._stop = url, key, [], threading.Event()
        self.errors: list[dict] = []  # the body of every answer that was not a 200
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, worker: int) -> None:
        i = 0
        while not self._stop.is_set():
            self.record(
                *call(
                    f"{self.url}/v1/models/intents/predict",
                    {"text": f"what is my account balance {worker} {i}"},
                    key=self.key,
                )[:2]
            )
            i += 1

    def record(self, status: int, body: dict) -> None:
        self.results.append((time.monotonic(), status, body.get("variant"), body.get("version")))
        if status != 200:
            self.errors.append(body)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def wait_for(self, variant: str, after: float, timeout_s: float = 30.0) -> None:
        wait_until(lambda: any(t > after and v == variant for t, _, v, _ in list(self.results)), timeout_s=timeout_s)


@pytest.fixture
def store(real_store, clinc_subset, tmp_path):
    """A copy of the real store, plus an n-gram fallback version of `intents` (no embedder)."""
    copy = ModelStore.for_tenant(tmp_path / "models", "default")
    shutil.copytree(real_store.root.parent, copy.root.parent)
    data = {k: str(v) for k, v in clinc_subset.items()}
    config = parse_config({"name": "intents", "data": data, "model": {"type": "ngram"}, "training": {"epochs": 20}})
    fallback = train_head(config, store=copy, cache_dir=tmp_path / "cache", promote=False)["version"]
    copy.change_serving("intents", lambda s: serving_state.set_fallback(s, fallback), reason="test")
    return copy


def test_embedder_outage_switches_to_the_fallback_and_back(store, empty_db, tmp_path):
    apply_migrations(empty_db)
    key = create_key(empty_db, tenant="default")
    port = free_port()
    embedder_env = {"EMBEDDER_ADDRESS": f"127.0.0.1:{port}", "EMBEDDER_METRICS_PORT": "-1"}
    embedder = EmbedderProcess(embedder_env, log_path=tmp_path / "embedder.log").start()
    env = {
        "DATABASE_URL": empty_db,
        "EMBEDDER_ADDRESS": embedder.address,
        "MODEL_STORE": str(store.root.parent),
        "API_SPOOL_DIR": str(tmp_path / "spool"),
        **NO_RATE_LIMIT,
        "API_EMBED_TIMEOUT_S": "0.5",
    }
    try:
        with RouterProcess(env, tmp_path / "router.log") as router, Traffic(router.url, key) as traffic:
            traffic.wait_for("primary", after=0)
            killed_at = time.monotonic()
            embedder.proc.kill()  # no graceful drain: the embedder just disappears
            traffic.wait_for("fallback", after=killed_at)
            time.sleep(1.0)
            embedder = EmbedderProcess(embedder_env, log_path=tmp_path / "embedder.log").start()
            back_at = time.monotonic()
            traffic.wait_for("primary", after=back_at, timeout_s=30)
            # Each worker reconnects on its own (gRPC backoff): wait until all of them answer again.
            wait_until(lambda: {v for _, _, v, _ in traffic.results[-20:]} == {"primary"}, timeout_s=30)
    finally:
        embedder.stop()
    statuses = {status for _, status, _, _ in traffic.results}
    assert statuses == {200}, f"failed requests: {traffic.errors[:5]}"
    variants = [v for _, _, v, _ in traffic.results]
    assert "fallback" in variants and variants[-1] == "primary"
    fallback_version = store.serving("intents").fallback
    assert {ver for _, _, v, ver in traffic.results if v == "fallback"} == {fallback_version}
    answered = len(traffic.results)
    wait_until(lambda: query(empty_db, "SELECT count(*) FROM predictions")[0][0] == answered, timeout_s=60)
    roles = dict(query(empty_db, "SELECT role, count(*) FROM predictions GROUP BY role"))
    assert roles["fallback"] == variants.count("fallback") and roles["primary"] == variants.count("primary")


def test_rollback_under_traffic_fails_no_request(store, empty_db, embedder_process, clinc_subset, tmp_path):
    from heads.embedding import RemoteEmbedder

    apply_migrations(empty_db)
    key = create_key(empty_db, tenant="default")
    old = store.serving_version("intents")
    data = {k: str(v) for k, v in clinc_subset.items()}
    config = parse_config(
        {"name": "intents", "data": data, "model": {"type": "mlp", "hidden_layers": [32]}, "training": {"epochs": 10}}
    )
    new = train_head(
        config,
        store=store,
        cache_dir=tmp_path / "cache",
        embedder=RemoteEmbedder(embedder_process.address),
        promote=False,
    )["version"]
    env = {
        "DATABASE_URL": empty_db,
        "EMBEDDER_ADDRESS": embedder_process.address,
        "MODEL_STORE": str(store.root.parent),
        "API_SPOOL_DIR": str(tmp_path / "spool"),
        **NO_RATE_LIMIT,
    }
    with RouterProcess(env, tmp_path / "router.log") as router, Traffic(router.url, key) as traffic:
        wait_until(lambda: len(traffic.results) > 10)
        store.set_serving("intents", new, reason="release")
        wait_until(lambda: traffic.results[-1][3] == new, timeout_s=20)
        time.sleep(0.5)
        store.change_serving("intents", serving_state.rollback, reason="bad release", rollback=True)
        wait_until(lambda: traffic.results[-1][3] == old, timeout_s=20)
        time.sleep(0.5)
    assert {status for _, status, _, _ in traffic.results} == {200}, f"failed requests: {traffic.errors[:5]}"
    versions = [v for _, _, _, v in traffic.results]
    assert versions[0] == old and new in versions and versions[-1] == old
    assert store.serving("intents").primary == old and store.serving("intents").fallback is not None
