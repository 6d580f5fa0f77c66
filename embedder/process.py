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
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self._startup_timeout_s)
        if not line or not line[0].strip():
            self.stop()
            hint = f"; see {self._log_path}" if self._log_path else ""
            raise RuntimeError(f"the embedder did not become ready in {self._startup_timeout_s:.0f}s{hint}")
        self.ready = json.loads(line[0])
        return self

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> EmbedderProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
