"""`python -m embedder ...` as a user runs it: real processes, real model, real signals."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest

from devtools.embedder_process import EmbedderProcess, scrape_metric
from embedder.client import EmbedderClient
from embedder.errors import Unavailable
from tests.conftest import ROOT


def run_cli(*args, stdin=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "embedder", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("embedder") / "log"
    server = EmbedderProcess({"EMBEDDER_SHUTDOWN_GRACE_S": "30"}, log_path=log_path)
    server.start()
    assert server.ready["event"] == "ready", server.ready
    yield server.proc, server.ready, log_path
    server.stop()


def test_embed_local_prints_json(reference):
    item = reference["items"][0]
    out = run_cli("embed", "--local", item["text"])
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["dim"] == 384 and payload["model"].startswith("all-MiniLM-L6-v2@")
    assert float(np.dot(payload["embeddings"][0], item["embedding"])) > 0.9999


def test_embed_reads_stdin_from_a_running_server(server_process):
    _, ready, _ = server_process
    out = run_cli("embed", "--address", ready["address"], stdin="first line\n\nsecond line\n")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert len(payload["embeddings"]) == 2 and payload["model"] == ready["model_id"]


def test_embed_prints_the_pooled_layers_asked_for(server_process):
    _, ready, _ = server_process
    out = run_cli("embed", "--address", ready["address"], "--features", "layers-4-6", "refund my order")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["dim"] == 1152 and len(payload["embeddings"][0]) == 1152
    assert payload["model"] == f"{ready['model_id']}#layers-4-6"
    bad = run_cli("embed", "--address", ready["address"], "--features", "layers-1-7", "refund my order")
    assert bad.returncode == 2 and "serves layers 1-6" in bad.stderr and "Traceback" not in bad.stderr


def test_embed_reports_bad_input_without_a_traceback(server_process):
    _, ready, _ = server_process
    out = run_cli("embed", "--address", ready["address"], "   ")
    assert out.returncode == 2
    assert "texts[0] is empty or whitespace-only" in out.stderr and "Traceback" not in out.stderr


def test_metrics_endpoint_exports_cache_and_batches(server_process):
    _, ready, _ = server_process
    EmbedderClient(ready["address"], timeout_s=30).embed(["metrics one", "metrics one", "metrics two"])
    body = urllib.request.urlopen(f"http://127.0.0.1:{ready['metrics_port']}/metrics", timeout=5).read().decode()
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in body.splitlines() if line and not line.startswith("#")
    }
    assert samples["embedder_cache_misses_total"] >= 2
    assert samples["embedder_batch_size_count"] >= 1
    assert "embedder_queue_depth" in samples and 'embedder_request_seconds_bucket{le="0.1"}' in samples


def test_health_probe(server_process):
    _, ready, _ = server_process
    out = run_cli("health", "--address", ready["address"])
    assert out.returncode == 0 and "SERVING" in out.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        unused = f"127.0.0.1:{s.getsockname()[1]}"
    down = run_cli("health", "--address", unused, "--timeout", "1")
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_settings_lists_every_variable():
    out = run_cli("settings")
    assert out.returncode == 0
    for var in (
        "EMBEDDER_ADDRESS",
        "EMBEDDER_CACHE_SIZE",
        "EMBEDDER_MAX_BATCH_SIZE",
        "EMBEDDER_MAX_WAIT_MS",
        "EMBEDDER_MAX_QUEUE",
    ):
        assert var in out.stdout


def test_invalid_setting_is_reported_clearly():
    out = run_cli("embed", "--local", "x", env={"EMBEDDER_CACHE_SIZE": "lots"})
    assert out.returncode == 2 and "EMBEDDER_CACHE_SIZE='lots' is not a valid int" in out.stderr


def test_sigterm_drains_in_flight_requests(server_process):
    """Last in this module: it stops the shared server."""
    proc, ready, log_path = server_process
    client = EmbedderClient(ready["address"], timeout_s=60, retries=0)
    long_texts = [f"request {i} " + "several words that make a long text " * 40 for i in range(64)]
    outcome = {}

    def slow_request():
        outcome["result"] = client.embed(long_texts)

    texts_before = _texts_received(ready["metrics_port"])
    worker = threading.Thread(target=slow_request)
    worker.start()
    while scrape_metric(ready["metrics_port"], "embedder_requests_in_flight") == 0 and worker.is_alive():
        pass
    assert worker.is_alive() and _texts_received(ready["metrics_port"]) == texts_before  # not finished yet
    proc.send_signal(signal.SIGTERM)
    worker.join(60)
    assert outcome["result"].vectors.shape == (64, 384)  # finished despite the SIGTERM
    try:
        status = proc.wait(60)
    except subprocess.TimeoutExpired:
        status = None
    # On a failure, the server's log says how far the shutdown got.
    assert status == 0, log_path.read_text(errors="replace")[-6000:]
    with pytest.raises(Unavailable):
        client.embed(["after shutdown"], timeout=2)


def test_a_sigterm_taken_by_any_thread_stops_the_server(tmp_path):
    """The kernel may hand a process's SIGTERM to any of its threads (TensorFlow's, gRPC's): sent
    to one of them, it used to leave the server serving, its main thread asleep."""
    with EmbedderProcess({"EMBEDDER_XLA_MAX_TOKENS": "0"}, log_path=tmp_path / "log") as server:
        pid = server.proc.pid
        # TensorFlow's pool threads live as long as the process (gRPC's pools may shrink).
        takers = [tid for tid, name, blocked in _threads(pid) if name.startswith("tf_") and not blocked]
        assert takers, _threads(pid)
        os.kill(takers[-1], signal.SIGTERM)
        try:
            status = server.proc.wait(60)
        except subprocess.TimeoutExpired:
            status = None
        log = (tmp_path / "log").read_text(errors="replace")
        assert status == 0, log[-6000:]
        assert "shutting down on SIGTERM" in log and log.rstrip().endswith("stopped")


def _threads(pid: int) -> list[tuple[int, str, bool]]:
    """(thread id, name, whether it blocks SIGTERM) of each thread of `pid` but the main one."""
    threads = []
    for tid in sorted(int(name) for name in os.listdir(f"/proc/{pid}/task")):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                name = comm.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigBlk:"))
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        if tid != pid:
            threads.append((tid, name, bool(mask & (1 << (signal.SIGTERM - 1)))))
    return threads


def _texts_received(metrics_port: int) -> float:
    return scrape_metric(metrics_port, "embedder_texts_total")


def test_the_ready_line_names_the_xla_shapes_and_wait_compiled_waits_for_them(tmp_path):
    with EmbedderProcess({"EMBEDDER_XLA_MAX_TOKENS": "16"}, log_path=tmp_path / "log") as server:
        assert server.ready["xla_shapes"] == 4  # widths 4, 8, 12 and 16
        assert server.wait_compiled(timeout_s=120) == 0
        assert server.gauge("embedder_xla_shapes_ready") == 4 and server.gauge("embedder_xla_shapes_failed") == 0
    with EmbedderProcess({"EMBEDDER_XLA_MAX_TOKENS": "0"}, log_path=tmp_path / "log-off") as server:
        assert server.ready["xla_shapes"] == 0
        server.wait_compiled(timeout_s=1)  # nothing to wait for
