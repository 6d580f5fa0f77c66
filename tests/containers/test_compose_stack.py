"""The whole system from its images: compose.yaml under podman, checked from the host.

Run by `make test-containers` (not by `make test`: building the images takes minutes). The stack
is the one users get from `docker compose up`: PostgreSQL, the migration job, the embedder, the
demo training job and the router, with the model store, the spool and the database on volumes.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from devtools import containers
from devtools.processes import free_port

# Building images from nothing takes longer than the suite's 600 s per test (make test-containers
# builds them first; the fixture's build is then a cache hit).
pytestmark = [pytest.mark.containers, pytest.mark.timeout(2400)]

PROJECT = "mhtest"
MODELS = {"email-replies", "news-topics", "support-tickets"}


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def sql(query: str) -> str:
    return podman("exec", container("postgres"), "psql", "-U", "manyheads", "-d", "manyheads", "-tAc", query).strip()


def wait_until(condition, *, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, AssertionError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


class Client:
    def __init__(self, url: str, key: str):
        self.url, self.key = url, key

    def call(self, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def predict(self, model: str, text: str, request_id: str) -> tuple[int, dict]:
        return self.call(f"/v1/models/{model}/predict", {"text": text}, {"X-Request-ID": request_id})


@pytest.fixture(scope="module")
def stack():
    containers.build_all()
    port = free_port()
    env = containers.compose_env(f"127.0.0.1:{port}")
    containers.compose(PROJECT, "down", "-v", env=env, check=False)
    containers.compose(PROJECT, "up", "-d", env=env)
    try:
        wait_until(
            lambda: (
                podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", container("train-demo")).split()
                == ["exited", "0"]
            ),
            timeout_s=900,
            what="the demo training job",
            interval_s=5,
        )
        key = podman("exec", container("router"), "python", "-m", "api", "keys", "create", "--tenant", "default")
        client = Client(f"http://127.0.0.1:{port}", key.strip())

        def serves_the_demo_models() -> bool:
            # A key just created reaches each worker's key ring through NOTIFY: a first call may be refused.
            status, body = client.call("/v1/models")
            return status == 200 and {m["name"] for m in body["models"]} == MODELS

        wait_until(serves_the_demo_models, timeout_s=120, what="the router to serve the demo models")
        yield client
    finally:
        logs = {
            service: podman("logs", "--tail", "30", container(service), check=False)
            for service in ("router", "embedder")
        }
        containers.compose(PROJECT, "down", "-v", env=env, check=False)
        print(json.dumps(logs, indent=1)[-6000:])


def answered_rows(request_ids: list[str]) -> tuple[int, int]:
    """(rows, distinct (request, item, role)) of these requests in the inference database."""
    ids = ",".join(f"'{r}'" for r in request_ids)
    rows, distinct = sql(
        f"SELECT count(*), count(DISTINCT (request_id, item_index, role)) FROM predictions WHERE request_id IN ({ids})"
    ).split("|")
    return int(rows), int(distinct)


def test_predictions_answer_through_the_published_port_and_each_lands_once(stack):
    ids = [f"c-{uuid.uuid4().hex[:12]}" for _ in range(5)]
    for request_id in ids:
        status, body = stack.predict("email-replies", "please take me off your mailing list", request_id)
        assert status == 200 and body["predictions"][0]["label"], body
    wait_until(lambda: answered_rows(ids) == (5, 5), timeout_s=30, what="the five rows")


def test_the_router_runs_unprivileged_on_a_read_only_store(stack):
    assert podman("exec", container("router"), "id", "-u").strip() == "10001"
    denied = subprocess.run(
        ["podman", "exec", container("router"), "touch", "/srv/models/default/x"], capture_output=True, text=True
    )
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr


def test_without_the_embedder_the_fallback_answers_then_the_primary_again(stack):
    state = json.loads(podman("exec", container("router"), "cat", "/srv/models/default/email-replies/serving.json"))
    primary, fallback = state["primary"], state["fallback"]
    assert fallback and fallback != primary
    podman("stop", "-t", "5", container("embedder"))
    try:
        status, body = stack.predict("email-replies", "unsubscribe me please", f"fb-{uuid.uuid4().hex[:12]}")
        assert status == 200 and body["version"] == fallback, body
        status, _ = stack.predict("news-topics", "the election results are in", f"nf-{uuid.uuid4().hex[:12]}")
        assert status == 503  # no fallback: unavailable, never a wrong answer
    finally:
        podman("start", container("embedder"))
    wait_until(
        lambda: (
            stack.predict("email-replies", "unsubscribe me please", f"pr-{uuid.uuid4().hex[:12]}")[1].get("version")
            == primary
        ),
        timeout_s=180,
        what="the primary to answer again",
        interval_s=2,
    )


def waiting_spool_files() -> int:
    listing = podman("exec", container("router"), "ls", "-A", "/app/var/spool").split()
    return sum(name.startswith(("spool-", "journal-")) for name in listing)


def test_a_database_outage_fails_no_answer_and_loses_no_row_across_a_router_restart(stack):
    podman("stop", "-t", "10", container("postgres"))
    before = [f"db-a-{i}-{uuid.uuid4().hex[:8]}" for i in range(20)]
    after = [f"db-b-{i}-{uuid.uuid4().hex[:8]}" for i in range(10)]
    try:
        for request_id in before:
            assert stack.predict("support-tickets", "my invoice is wrong", request_id)[0] == 200
        podman("restart", "-t", "30", container("router"))  # SIGTERM: the rows go to the volume
        assert waiting_spool_files() > 0, "rows must wait on the spool volume"
        wait_until(lambda: stack.call("/readyz")[0] == 200, timeout_s=120, what="the restarted router")
        for request_id in after:
            assert stack.predict("support-tickets", "my invoice is wrong", request_id)[0] == 200
    finally:
        podman("start", container("postgres"))
    ids = before + after
    wait_until(lambda: answered_rows(ids) == (len(ids), len(ids)), timeout_s=180, what="every row, once", interval_s=2)
