"""A reload asked of every worker of a router: a counter in a small file that they all poll.

The gunicorn workers of one router share nothing but the host's disk, and the operator's reload
reaches only the worker that takes the request. That worker bumps the counter in
`<API_SPOOL_DIR>/reload-generation` (the spool is writable and shared by the workers; the model
store may be read-only); every worker's heads poller reads it at each poll and, when it moved,
reloads every serving state (tenant_heads.py). One read of a few bytes per poll and worker. Where
router tasks share one spool file system (EFS in terraform/), the reload reaches all of them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from heads.generation import GenerationFile

log = logging.getLogger(__name__)

FILE_NAME = "reload-generation"


class ReloadGeneration:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = GenerationFile(self.path)
        self._problem: str | None = None  # why the file cannot be read, logged once
        self.applied = self.read() or 0  # the generation this process reloaded last (at start: all loads)

    def read(self) -> int | None:
        """The current generation: 0 while no reload was ever asked, None when the file cannot be
        read (the polls then reload only what changed; logged once per reason)."""
        try:
            generation = self._file.read()
        except (OSError, ValueError) as exc:
            if str(exc) != self._problem:
                log.warning("cannot read the reload generation %s (%s): polls reload what changed", self.path, exc)
            self._problem = str(exc)
            return None
        self._problem = None
        return generation

    def pending(self) -> int | None:
        """The generation to apply when it is not the one applied last (a bump by any worker, or a
        spool folder emptied), else None."""
        generation = self.read()
        return None if generation is None or generation == self.applied else generation

    def bump(self) -> int:
        """Ask every worker for a full reload: the next generation, written atomically under a lock
        so that two reloads at once give two generations. Raises OSError when the spool is not
        writable."""
        return self._file.bump()
