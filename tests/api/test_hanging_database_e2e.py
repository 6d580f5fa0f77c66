"""The router over a PostgreSQL that accepts connections but never answers (a TCP proxy the test
blackholes): predictions keep answering 200, feedback and reports answer 503 within their
timeout, a promotion is still served, a graceful stop ends within gunicorn's graceful timeout,
and every answered row reaches the table once the database answers again."""

from __future__ import annotations

import shutil
import time

from heads.config import parse_config
from heads.embedding import RemoteEmbedder
from heads.pipeline import train_head
from heads.registry import ModelStore
from tests.api.servers import RouterProcess
from tests.api.test_e2e import api_key, call, router_env, rows_for  # noqa: F401 - fixtures
from tests.db.helpers import wait_until
from tests.tcp_proxy import TcpProxy

GRACEFUL_TIMEOUT_S = 30  # api/web/gunicorn_conf.py


def test_a_hanging_database_stalls_nothing(router_env, real_store, tmp_path, api_key):  # noqa: F811
    store_copy = tmp_path / "models"
    shutil.copytree(real_store.root.parent, store_copy)
    store = ModelStore.for_tenant(store_copy, "default")
    config = parse_config(store.load("intents").manifest.training_config | {"name": "intents"})
    embedder = RemoteEmbedder(router_env["EMBEDDER_ADDRESS"])
    new = train_head(config, store=store, cache_dir=tmp_path / "cache", embedder=embedder, promote=False)["version"]
    dsn = router_env["DATABASE_URL"]
    proxy, through = TcpProxy.for_dsn(dsn)
    env = {**router_env, "DATABASE_URL": through, "MODEL_STORE": str(store_copy), "API_DB_TIMEOUT_S": "1"}
    answered: list[str] = []
    with proxy:
        router = RouterProcess(env, tmp_path / "router.log").start()
        try:
            url = f"{router.url}/v1/models/intents/predict"

            def predict(text: str) -> tuple[int, dict]:
                status, body, _ = call(url, {"text": text}, key=api_key)
                if status == 200:
                    answered.append(body["request_id"])
                return status, body

            assert predict("what is my account balance")[0] == 200
            proxy.blackhole()

            slowest = 0.0
            for i in range(40):
                started = time.monotonic()
                assert predict(f"how much money do I have, take {i}")[0] == 200
                slowest = max(slowest, time.monotonic() - started)
            assert slowest < 2.0, slowest  # nothing on the request path waits for the database

            for path, body in ((f"/v1/predictions/{answered[0]}/feedback", {"label": "balance"}), ("", None)):
                target = f"{router.url}{path}" if path else f"{router.url}/v1/models/intents/report"
                started = time.monotonic()
                status, error, headers = call(target, body, key=api_key)
                assert status == 503 and error["error"]["code"] == "database_unavailable", (target, status, error)
                assert headers["Retry-After"] == "1"
                assert time.monotonic() - started < 4.0  # 1 s timeout (2 s if a new connection is needed)

            store.set_serving("intents", new)  # hot reload does not wait for the database either
            versions: list[str] = []

            def served_everywhere() -> bool:
                versions.append(predict("freeze my account")[1]["version"])
                return versions[-10:] == [new] * 10

            wait_until(served_everywhere, timeout_s=15, interval_s=0.05)
        finally:
            started = time.monotonic()
            returncode = router.stop(timeout_s=GRACEFUL_TIMEOUT_S + 30)
            stopping_s = time.monotonic() - started
        assert returncode == 0 and stopping_s < GRACEFUL_TIMEOUT_S, (returncode, stopping_s)

        proxy.forward()
        with RouterProcess(env, tmp_path / "router2.log"):  # replays the journal the first one left
            wait_until(lambda: len(rows_for(dsn, answered)) >= len(answered), timeout_s=60)
    rows = rows_for(dsn, answered)
    assert len(rows) == len(answered) == len({r[0] for r in rows})  # every answered text, exactly once
