"""Run `python -m embedder serve` as a child process (for `make run`, tests and benchmarks).

The child prints one JSON "ready" line with the ports it picked; `EmbedderProcess` waits for it,
and stops the child with SIGTERM (graceful drain) on exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def scrape_metric(metrics_port: int, name: str) -> float:
    """The value of one unlabelled metric on a Prometheus /metrics page at 127.0.0.1 (0 when absent)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return next((float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " ")), 0.0)


def read_ready_line(proc: subprocess.Popen, timeout_s: float, *, what: str, log_path: Path | None = None) -> dict:
    """The JSON line a child prints on stdout once it serves; RuntimeError (naming `what` and
    the log) when none comes within `timeout_s`. The caller stops the child on error."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not line or not line[0].strip():
        hint = f"; see {log_path}" if log_path else ""
        raise RuntimeError(f"{what} did not become ready in {timeout_s:.0f}s{hint}")
    return json.loads(line[0])


def stop_child(proc: subprocess.Popen | None, timeout_s: float) -> int | None:
    """SIGTERM (the child drains and exits), SIGKILL after `timeout_s`; its exit status."""
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


class EmbedderProcess:
    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        python: str = sys.executable,
        startup_timeout_s: float = 180.0,
        log_path: Path | None = None,
    ):
        self._env = {"EMBEDDER_ADDRESS": "127.0.0.1:0", "EMBEDDER_METRICS_PORT": "0", **(env or {})}
        self._python = python
        self._startup_timeout_s = startup_timeout_s
        self._log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}

    @property
    def address(self) -> str:
        return self.ready["address"]

    @property
    def metrics_port(self) -> int | None:
        return self.ready.get("metrics_port")

    def start(self) -> EmbedderProcess:
        stderr = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self._python, "-m", "embedder", "serve"],
            cwd=ROOT,
            env={**os.environ, **self._env},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            self.ready = read_ready_line(
                self.proc, self._startup_timeout_s, what="the embedder", log_path=self._log_path
            )
        except RuntimeError:
            self.stop()
            raise
        return self

    def wait_compiled(self, timeout_s: float = 300.0) -> int:
        """Until every XLA shape the embedder plans is settled, compiled or failed (its gauges
        embedder_xla_shapes_ready and _failed): a measurement started earlier shares the CPU with
        the compiler. Returns how many failed (they run the graph function: slower, still exact)."""
        shapes = self.ready.get("xla_shapes", 0)
        if not shapes or self.metrics_port is None:
            return 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, failed = (self.gauge(name) for name in ("embedder_xla_shapes_ready", "embedder_xla_shapes_failed"))
            if ready + failed >= shapes:
                if failed:
                    print(f"embedder: {failed:.0f} of {shapes} XLA shapes failed to compile", file=sys.stderr)
                return int(failed)
            time.sleep(0.5)
        raise RuntimeError(f"the embedder settled fewer than {shapes} XLA shapes in {timeout_s:.0f}s")

    def gauge(self, name: str) -> float:
        """The value of one unlabelled metric of the embedder's /metrics (0 when absent)."""
        return scrape_metric(self.metrics_port, name)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        return stop_child(self.proc, timeout_s)

    def __enter__(self) -> EmbedderProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
