"""No tenant learns another's texts through the caches: on a real gunicorn router (two workers,
each with its own embedding cache) over the real embedder, a text tenant acme sent is, for
tenant globex, a miss on every worker, by `cache_hit` and by X-Embedding-Time-Ms alike, unless
the operator shares the caches (API_SHARE_EMBEDDING_CACHE).

A keep-alive connection stays with the worker that accepted it; the test gets one connection per
worker by pausing (SIGSTOP) the other workers while a connection is accepted.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import statistics
import time
from contextlib import contextmanager

import pytest

from inferencedb.keys import create_key
from tests.api.servers import RouterProcess

TEXTS_PER_WORKER = 3


@pytest.fixture(params=[False, True], ids=["per-tenant", "shared"])
def stack(request, db, real_store, embedder_process, tmp_path):
    """A router over acme and globex (each with the model "intents"), their keys, and whether the
    operator shares the caches."""
    root = tmp_path / "models"
    for tenant in ("acme", "globex"):
        shutil.copytree(real_store.root / "intents", root / tenant / "intents")
    keys = {tenant: create_key(db, tenant=tenant) for tenant in ("acme", "globex")}
    env = {
        "DATABASE_URL": db,
        "EMBEDDER_ADDRESS": embedder_process.address,
        "MODEL_STORE": str(root),
        "API_SPOOL_DIR": str(tmp_path / "spool"),
        "API_SHARE_EMBEDDING_CACHE": str(request.param).lower(),
    }
    with RouterProcess(env, tmp_path / "router.log") as router:
        yield router, keys, request.param


def stopped(pid: int) -> bool:
    """Whether every thread of `pid` has stopped. kill() returns before they have: the kernel wakes
    one thread, which then stops the others, and meanwhile a pool thread of the router's worker
    (api/web/pool_worker.py) can still accept a connection and stop before reading it."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{task}/stat").read()
        except FileNotFoundError:
            continue  # a thread that ended
        states.append(stat.rsplit(")", 1)[1].split()[0])
    return all(state in ("T", "t") for state in states)


@contextmanager
def only_worker(router: RouterProcess, pid: int):
    """While inside, every other worker of the router is paused: only `pid` accepts connections."""
    others = [p for p in router.workers() if p != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while not all(stopped(other) for other in others):
        assert time.monotonic() < deadline, "a worker did not stop"
        time.sleep(0.005)
    try:
        yield
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)


class WorkerConnection:
    """A keep-alive HTTP connection to one worker; it fails rather than reconnect elsewhere."""

    def __init__(self, router: RouterProcess, pid: int, key: str):
        self.connection = http.client.HTTPConnection("127.0.0.1", router.port, timeout=30)
        self.socket = None
        with only_worker(router, pid):
            self.predict(key, "hello")  # connects: accepted by `pid`, the only worker running
        self.socket = self.connection.sock

    def predict(self, key: str, text: str) -> tuple[bool, float]:
        """(cache_hit, X-Embedding-Time-Ms) of one text of model "intents"."""
        self.connection.request(
            "POST",
            "/v1/models/intents/predict",
            body=json.dumps({"text": text}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = self.connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        assert self.socket in (None, self.connection.sock), "the worker closed the connection"
        (prediction,) = body["predictions"]
        return prediction["cache_hit"], float(response.getheader("X-Embedding-Time-Ms"))


def test_a_tenant_cannot_tell_what_another_tenant_sent(stack):
    router, keys, shared = stack
    acme, globex = keys["acme"], keys["globex"]
    workers = router.workers()
    assert len(workers) == 2
    connections = [WorkerConnection(router, pid, acme) for pid in workers]
    times: dict[str, list[float]] = {"miss": [], "worker hit": [], "embedder hit": [], "globex first": []}

    for w, here in enumerate(connections):
        there = connections[1 - w]
        for i in range(TEXTS_PER_WORKER):
            text = f"isolation probe {w}-{i}: may I move my {('savings', 'pension', 'bonus')[i]} to another bank"
            hit, ms = here.predict(acme, text)
            assert hit is False, text  # never sent before, by anyone
            times["miss"].append(ms)
            hit, ms = here.predict(acme, text)  # acme's repeat: this worker's cache
            assert hit is True
            times["worker hit"].append(ms)
            hit, ms = there.predict(acme, text)  # acme's repeat elsewhere: the embedder's cache
            assert hit is True
            times["embedder hit"].append(ms)
            # Both workers and the embedder now hold acme's text: globex's first request for it.
            hit, ms = here.predict(globex, text)
            assert hit is shared, (text, ms)
            times["globex first"].append(ms)
            hit, _ = there.predict(globex, text)
            assert hit is True  # globex's own text: the embedder has it in globex's namespace now

    first, miss = times["globex first"], times["miss"]
    worker_hit, embedder_hit = max(times["worker hit"]), statistics.median(times["embedder hit"])
    if shared:
        assert max(first) < min(miss), times  # a hit in this worker's cache: the membership signal
    else:
        # A miss's time: slower than any cache hit of acme's on the same workers, as slow as acme's misses.
        assert min(first) > worker_hit, times
        assert statistics.median(first) > 2 * embedder_hit, times
        assert statistics.median(first) > 0.5 * statistics.median(miss), times
