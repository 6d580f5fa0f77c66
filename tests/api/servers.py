"""A real gunicorn router in a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RouterProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *, ready_path: str = "/readyz", preexec_fn=None):
        self.preexec_fn = preexec_fn  # run in the child before gunicorn starts (tests/file_access.py)
        self.port = free_port()
        self.env = {**os.environ, "API_PORT": str(self.port), "API_WORKERS": "2", "API_RELOAD_INTERVAL_S": "0.2", **env}
        self.log_path = log_path
        self.ready_path = ready_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> RouterProcess:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [gunicorn, "-c", "api/web/gunicorn_conf.py", "api.web.app:create_app()"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"router exited: {self.log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2):
                    return self
            except urllib.error.HTTPError:
                if self.ready_path == "/healthz":
                    raise
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"router not ready: {self.log_path.read_text()[-3000:]}")

    def workers(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.stop() is None:  # pragma: no cover
            self.proc.kill()
