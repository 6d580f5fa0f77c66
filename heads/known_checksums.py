"""Weights checksums a host has already verified, so that no router process hashes a file twice.

A router checks the SHA-256 of every head's weights, when it loads the head or, for a first
load, before its first answer (heads/artifact.py, heads/weights_check.py).
At 10,000 heads of 2.7 MB that is 27 GB read and hashed, about 14 s of one core here, again in
every worker, again whenever a worker is replaced (a crash, a timeout) while its sibling serves.

`KnownChecksums` keeps, in one append-only file that a router's processes share (in its spool
folder), a line per file whose checksum matched: the file's device, inode, size, modification and
change times (nanoseconds), and the checksum. A file is hashed only when no line matches what
`stat` says of it now, the way git's index tells unchanged files from changed ones: a version
written again, replaced by a rename (the registry, `aws s3 sync`), or modified in place has
another inode or other times, and is hashed again; a file that does not match its checksum is
never recorded. What it does not catch is what a load-time check does not catch either once
loaded: the disk changing a file's bytes under the same inode and times.

The record is an optimisation only: a folder that cannot be written or read means hashing every
time, as before. Lines of versions since deleted stay (about 150 bytes a version).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from embedder.convert import sha256_file

log = logging.getLogger(__name__)

FILE_NAME = "verified-weights"


def _key(stat: os.stat_result, sha256: str) -> str:
    return f"{stat.st_dev} {stat.st_ino} {stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns} {sha256}"


class KnownChecksums:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._known: set[str] = set()
        self._offset = 0  # bytes of the record read so far
        self._failed = False  # the record could not be written: said once
        self._lock = threading.Lock()

    def matches(self, file: Path, expected: str) -> bool:
        """Whether `file`'s SHA-256 is `expected`: from the record when this very file (same inode,
        size and times) matched before on this host, else by hashing it (a match is recorded)."""
        stat = os.stat(file)  # before hashing: a change while it is read leaves a key that never matches again
        key = _key(stat, expected)
        with self._lock:
            if key in self._known:  # no I/O: what this process read or wrote before
                return True
            self._read_new_lines()  # what other processes recorded since
            if key in self._known:
                return True
        if sha256_file(file) != expected:
            return False
        with self._lock:
            if key not in self._known:
                self._known.add(key)
                self._append(key)
        return True

    def _read_new_lines(self) -> None:
        """The lines other processes appended since the last read (whole lines only)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        complete = data.rfind(b"\n") + 1
        self._known.update(line.decode("ascii", "replace") for line in data[:complete].split(b"\n") if line)
        self._offset += complete

    def _append(self, key: str) -> None:
        # One write() in append mode: lines of concurrent processes never interleave.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # a router's spool, before its first row
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{key}\n".encode("ascii"))
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "cannot record verified checksums in %s (%s): every load hashes the weights", self.path, exc
                )
