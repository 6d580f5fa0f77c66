"""Processes for the local stack, the end-to-end tests and the load tests: a free port, and the
router exactly as it is deployed (gunicorn with api/web/gunicorn_conf.py), started and stopped.

    with GunicornRouter({"MODEL_STORE": "...", ...}, Path("router.log")) as router:
        urllib.request.urlopen(router.url + "/v1/models")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
ROUTER_APP = "api.web.app:create_app()"
GUNICORN_CONF = ROOT / "api" / "web" / "gunicorn_conf.py"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the kernel's pick; a race with other processes is
    possible but needs one to bind the same ephemeral port in the next milliseconds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class GunicornRouter:
    """The router in a subprocess: gunicorn with the deployed configuration and `app`.

    `env` is added to this process's environment (a value of None removes the variable); API_PORT
    is set from `port` (a free one by default). `start()` returns once `ready_path` answers 200."""

    def __init__(
        self,
        env: Mapping[str, str | None],
        log_path: Path,
        *,
        port: int | None = None,
        app: str = ROUTER_APP,
        preexec_fn: Callable[[], None] | None = None,
    ):
        self.port = port or free_port()
        merged = {**os.environ, **env, "API_PORT": str(self.port)}
        self.env = {name: value for name, value in merged.items() if value is not None}
        self.log_path = Path(log_path)
        self.app = app
        self.preexec_fn = preexec_fn  # run in the child before gunicorn starts (tests/file_access.py)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = 90.0, *, ready_path: str = "/readyz") -> GunicornRouter:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [gunicorn, "-c", str(GUNICORN_CONF), self.app],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the router exited with status {self.proc.returncode}: {self._log_tail()}")
            if self._answers(self.url + ready_path):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the router was not ready within {timeout_s:.0f} s: {self._log_tail()}")

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False  # HTTPError (503 not ready) included: keep waiting

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            return f"see {self.log_path}\n{self.log_path.read_text(errors='replace')[-chars:]}"
        except OSError:
            return f"see {self.log_path}"

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def workers(self) -> list[int]:
        """The worker processes' pids (children of the gunicorn master)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def pids(self) -> list[int]:
        """The master and its workers."""
        return [self.proc.pid, *self.workers()] if self.poll() is None and self.proc else []

    def stop(self, timeout_s: float = 45.0) -> int | None:
        """SIGTERM: gunicorn finishes its requests and each worker flushes its inference log; killed
        if it has not exited after `timeout_s`. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> GunicornRouter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
