"""A real gunicorn router in a subprocess, for end-to-end tests (devtools/processes.py)."""

from __future__ import annotations

from pathlib import Path

from devtools.processes import GunicornRouter, free_port

__all__ = ["RouterProcess", "free_port"]


class RouterProcess(GunicornRouter):
    """The deployed router with two workers that pick serving changes up within 0.2 s. It is
    ready when `ready_path` answers 200 (/healthz: up, whether or not it can serve)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, ready_path: str = "/readyz", preexec_fn=None):
        super().__init__(
            {"API_WORKERS": "2", "API_RELOAD_INTERVAL_S": "0.2", **env},
            log_path,
            preexec_fn=preexec_fn,
        )
        self.ready_path = ready_path

    def start(self, timeout_s: float = 60.0) -> RouterProcess:
        super().start(timeout_s, ready_path=self.ready_path)
        return self
