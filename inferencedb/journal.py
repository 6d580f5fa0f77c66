"""The write-ahead journal of one router process: every prediction row is on local disk before
its answer leaves the worker, so a worker killed by SIGKILL, the OOM killer or gunicorn's timeout
loses no answered prediction.

The journal is a series of segment files, `journal-<pid>-<random>.jsonl` in the spool folder
(inferencedb/spool.py: created locked, one JSON row per line, written with one `write`). The process
appends to the current segment and holds the flock of every segment it still needs. A segment
is *sealed* when it gets old or large (new rows go to a new one) and *finished* once every row
appended to it is *resolved*, that is, committed to PostgreSQL or known not to be:

- every row committed (or set aside as rejected): the segment is deleted;
- some row not committed (the database was down, the in-memory queue was full, the process is
  closing): the segment is renamed `spool-...` and its lock released, so that whichever process
  gets to it first replays it with the other spool files.

A process that dies leaves its segments with their locks free: another process of the router
(or its successor) claims and replays them like spool files. Rows carry their own key and are
inserted with ON CONFLICT DO NOTHING, so rows that were committed before the death are not
duplicated by the replay.

The cost per row is one `write` system call to the page cache (no fsync: the promise is about the
process dying, not the machine). A segment that holds rows the database has not taken is
fsynced at most every `fsync_interval_s`, which bounds what a power loss takes during an outage.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from inferencedb.spool import JOURNAL_PREFIX, SPOOL_PREFIX, create_locked_file


class Segment:
    """One journal file of this process; its counters are guarded by the journal's lock."""

    __slots__ = ("path", "fd", "opened_at", "size", "appended", "resolved", "dirty", "sealed", "finished")

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path
        self.opened_at = time.monotonic()
        self.size = self.appended = self.resolved = 0
        self.dirty = self.sealed = self.finished = False


class Journal:
    """This process's journal in `directory`. Thread-safe; after a fork the child starts its own."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_max_bytes: int = 4 << 20,
        segment_max_age_s: float = 1.0,
        fsync_interval_s: float = 1.0,
    ):
        self.directory = Path(directory)
        self._max_bytes = segment_max_bytes
        self._max_age_s = segment_max_age_s
        self._fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        self._current: Segment | None = None
        self._open: list[Segment] = []  # segments not finished yet, current included
        self._pid = os.getpid()
        self._last_sync = 0.0

    def append(self, line: bytes) -> Segment:
        """Write one row's line; returns its segment, which `resolve` must later be told about.
        Raises OSError (disk full, folder gone): the row is then not on disk."""
        self._after_fork()
        with self._lock:
            segment = self._current
            if segment is None or segment.size >= self._max_bytes:
                segment = self._new_segment_locked()
            written = os.write(segment.fd, line)
            if written != len(line):  # a short write to a regular file: disk full
                self._seal_locked(segment, dirty=True)
                raise OSError(f"short write to {segment.path.name}: {written} of {len(line)} bytes")
            segment.size += written
            segment.appended += 1
            return segment

    def resolve(self, segments: list[Segment | None], *, committed: bool) -> None:
        """The rows of these segments (one entry per row; None for a row that is not journaled)
        are committed, or will not be committed by this process."""
        with self._lock:
            for segment in segments:
                if segment is None or segment.finished:
                    continue
                segment.resolved += 1
                segment.dirty |= not committed
                if segment.sealed and segment.resolved >= segment.appended:
                    self._finish_locked(segment)

    def maintain(self) -> None:
        """Seal the current segment once it is old, so that it is deleted (or, holding rows the
        database did not take, replayed) soon; fsync rows that wait for the database. Called by
        the writer thread."""
        self._after_fork()
        with self._lock:
            segment = self._current
            if segment is not None and time.monotonic() - segment.opened_at >= self._max_age_s:
                self._seal_locked(segment)
            if time.monotonic() - self._last_sync >= self._fsync_interval_s:
                self._last_sync = time.monotonic()
                for dirty in (s for s in self._open if s.dirty):
                    with contextlib.suppress(OSError):
                        os.fsync(dirty.fd)

    def close(self) -> None:
        """Let go of every segment: what is not resolved as committed is left for replay."""
        self._after_fork()
        with self._lock:
            for segment in list(self._open):
                segment.dirty |= segment.resolved < segment.appended
                segment.sealed = True
                self._finish_locked(segment)
            self._current = None

    @property
    def dirty_segments(self) -> int:
        """Segments still held that hold rows the database did not take (replayed once let go of).
        Read it before listing the folder's waiting files: a segment leaves this count only after
        its file has become a spool file, so a count taken in that order misses nothing."""
        with self._lock:
            return sum(s.dirty for s in self._open)

    # -- internals (journal lock held)

    def _new_segment_locked(self) -> Segment:
        if self._current is not None:
            self._seal_locked(self._current)
        fd, path = create_locked_file(self.directory, JOURNAL_PREFIX, sync_dir=False)
        segment = Segment(fd, path)
        self._current = segment
        self._open.append(segment)
        return segment

    def _seal_locked(self, segment: Segment, *, dirty: bool = False) -> None:
        segment.sealed = True
        segment.dirty |= dirty
        if self._current is segment:
            self._current = None
        if segment.resolved >= segment.appended:
            self._finish_locked(segment)

    def _finish_locked(self, segment: Segment) -> None:
        segment.finished = True
        with contextlib.suppress(OSError):
            if segment.dirty:  # replayable by any process once the lock is free
                os.fsync(segment.fd)
                segment.path.rename(segment.path.with_name(SPOOL_PREFIX + segment.path.name[len(JOURNAL_PREFIX) :]))
            else:
                segment.path.unlink()
        self._open.remove(segment)  # after the rename: see dirty_segments
        if self._current is segment:
            self._current = None
        os.close(segment.fd)  # releases the lock

    def _after_fork(self) -> None:
        if self._pid == os.getpid():
            return
        # A forked child: the parent's segments and their locks stay the parent's. Closing our
        # copies of the descriptors leaves the parent's locks alone (they belong to the open file).
        self._pid = os.getpid()
        self._lock = threading.Lock()
        for segment in self._open:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._open, self._current = [], None
