"""A generation counter in a small file: bumped atomically by writers, read cheaply by pollers.

The model store keeps one at `MODEL_STORE/.serving-generation`: the registry bumps it after every
serving change it writes, in any tenant, so a router with thousands of models learns that
something changed from one stat per poll instead of a look at every model. The router's
operator reload (api/core/reload_generation.py) is the same kind of counter in its spool.

A bump writes `<n>\n` to a temporary file and renames it over the counter, under an flock on a
lock file beside it, so two writers at once give two generations and a reader sees one or the
other. A poller compares `stamp()` (a stat and a read of a few bytes) with the one it saw last.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

STORE_FILE = ".serving-generation"


class GenerationFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> int:
        """The current generation: 0 when the file does not exist (nothing bumped it yet).
        OSError or ValueError when it exists but cannot be read or holds no number."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return 0
        return int(text) if text.strip() else 0

    def stamp(self) -> tuple | None:
        """(inode, size, mtime in ns, text) of the counter, None when there is none: changes at
        every bump (the text too, should a file system reuse the inode within one clock tick).
        OSError when the file exists but cannot be examined."""
        try:
            st = self.path.stat()
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, text

    def bump(self) -> int:
        """The next generation, written atomically under a lock. OSError when the folder is not writable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name.lstrip('.')}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = self.read()
            except ValueError:  # a damaged counter: pollers compare stamps, so any new value will do
                current = 0
            generation = current + 1
            temporary = self.path.with_name(f".{self.path.name.lstrip('.')}.{os.getpid()}.tmp")
            temporary.write_text(f"{generation}\n")
            os.replace(temporary, self.path)
        return generation
