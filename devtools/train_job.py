"""`python -m heads train` in a child process, for tools that must not load TensorFlow or Keras
themselves (the local stack, the load-test stack): their heads are trained exactly as a data
scientist trains them, through the running embedding service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from heads import layout
from heads.registry import ModelStore

ROOT = Path(__file__).resolve().parent.parent


def train_in_subprocess(
    config: Path,
    store: ModelStore,
    *,
    cache: Path,
    embedder_address: str,
    promote: bool = False,
    log: Path | None = None,
) -> dict:
    """Train `config` into `store` (a tenant's folder); returns the evaluation the CLI prints.
    The child's stderr (progress bars) is appended to `log` when given."""
    command = [
        sys.executable, "-m", "heads", "train", "--config", str(config),
        "--store", str(layout.store_root(store.root)), "--tenant", store.tenant,
        "--cache", str(cache), "--embedder", embedder_address,
    ]  # fmt: skip
    if promote:
        command.append("--promote")
    if log is None:
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        where = out.stderr[-2000:]
    else:
        with open(log, "ab") as err:
            out = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        where = f"see {log}"
    if out.returncode != 0:
        raise RuntimeError(f"training {config} failed: {where}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(result: dict) -> str:
    return f"{result['model']} {result['version']}: accuracy {result['accuracy']:.3f}, weighted F1 {result['weighted_f1']:.3f}"
