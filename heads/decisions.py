"""The release decisions of a model, oldest first: `<store>/<model>/decisions.jsonl`.

One JSON object per line, appended and never rewritten, so the log survives every serving change
and rollback (the serving state's history is popped by a rollback; this is not):

    {"at": "2026-11-30T10:15:02+00:00", "kind": "gate" | "auto_rollback" | ...,
     "version": "...", "outcome": "promoted" | "refused" | "rolled_back" | ...,
     "reason": "one sentence a person can act on", "evidence": {... the numbers behind it}}

Writers append a whole line with one write() on a file opened O_APPEND, so two writers never
interleave within a line; readers skip a line they cannot parse (a torn tail after a crash) and
say so in the log instead of failing the report.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.jsonl"


def decisions_path(model_folder: Path) -> Path:
    return Path(model_folder) / DECISIONS_FILE


def record_decision(
    model_folder: Path, *, kind: str, version: str, outcome: str, reason: str, evidence: dict | None = None
) -> dict:
    """Append one decision and return it as written (with its time)."""
    entry = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kind": kind,
        "version": version,
        "outcome": outcome,
        "reason": reason,
        "evidence": evidence or {},
    }
    line = (json.dumps(entry, sort_keys=True, allow_nan=False) + "\n").encode()
    path = decisions_path(model_folder)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def read_decisions(model_folder: Path, *, limit: int | None = None) -> list[dict]:
    """The decisions, oldest first (the last `limit` of them when given); [] when there are none."""
    path = decisions_path(model_folder)
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("%s line %d is not a decision (skipped): %r", path, number, line[:80])
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries[-limit:] if limit else entries
