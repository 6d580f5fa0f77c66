"""Append-only JSON-lines spool files on local disk, shared by the processes of one router.

Prediction rows that PostgreSQL has not taken wait here for replay: the journal files of
inferencedb/journal.py (every row is written there before its answer leaves), and spool files. Several
gunicorn workers share one folder, so:

* each process writes its own file, `spool-<pid>-<random>.jsonl`, and holds an exclusive
  `flock` on it while it is open. The file is created under a hidden temporary name, locked, and
  only then renamed to its public name, so no other process ever sees it unlocked while its
  owner may still append to it;
* a file is claimed for replay by taking its lock (non-blocking) and renaming it to
  `<name>.replaying-<pid>`; the claimer keeps the lock until it has replayed and deleted it. A
  claimed file whose claimer died has a free lock again and is reclaimed the same way. The lock,
  not the pid in the name, decides: pids get reused, locks die with their process.

A line is one JSON object, written with one `write` and followed by `flush`, so a crashed or
killed process leaves at most one truncated last line, which the reader skips with a warning.
Flushed data survives the process (the kernel has it); `fsync` at most every `fsync_interval_s`
(default 1 s) bounds what a power loss or kernel crash can take, without a disk sync per request
on the overflow path. The folder may be local or on NFSv4 (EFS): files are opened read-write, because
an exclusive flock on a file opened read-only fails with EBADF over NFS.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SPOOL_PREFIX = "spool"
JOURNAL_PREFIX = "journal"  # inferencedb/journal.py: a live process's rows, replayable once its owner lets go
REPLAYABLE = (SPOOL_PREFIX, JOURNAL_PREFIX)
REJECTED_PREFIX = "rejected"
CLAIM_MARK = ".replaying-"
SUFFIX = ".jsonl"
# A hidden, still-unlocked file older than this was left by a crash between create and rename.
_ABANDONED_NEW_FILE_S = 60.0


def encode_lines(rows: Iterable[dict]) -> bytes:
    """One compact JSON object per line. `allow_nan=False`: a NaN would make the line unreadable
    by strict parsers; rows are expected to be JSON-safe already."""
    return b"".join(
        json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n" for row in rows
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_locked_file(directory: Path, prefix: str, *, sync_dir: bool = True) -> tuple[int, Path]:
    """A new, empty, append-only `<prefix>-<pid>-<random>.jsonl` in `directory`, exclusively
    flocked by this process before any other process can see its public name; `sync_dir` makes
    the new name itself survive a power loss."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
    hidden = directory / f".{name}.new"
    fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(hidden, directory / name)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            hidden.unlink()
        raise
    if sync_dir:
        _fsync_dir(directory)
    return fd, directory / name


class SpoolWriter:
    """This process's append-only spool file in `directory`, opened lazily on the first append.

    Thread-safe. `rotate()` closes the file (releasing its lock) so it can be claimed and
    replayed; the next append starts a new file. After a fork the child opens its own file.
    """

    def __init__(self, directory: Path, *, prefix: str = SPOOL_PREFIX, fsync_interval_s: float = 1.0):
        self.directory = Path(directory)
        self.prefix = prefix
        self._fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._pid = os.getpid()
        self._last_sync = 0.0
        self._unsynced = False

    @property
    def path(self) -> Path | None:
        """The file being appended to, or None when none is open."""
        return self._path

    def append(self, rows: list[dict]) -> None:
        """Append rows, flushed to the kernel before returning. Raises OSError (disk full, folder
        gone); the file is then closed, so a partial line stays the last line of its file."""
        if not rows:
            return
        data = encode_lines(rows)
        self._after_fork()
        with self._lock:
            fd = self._open_locked()
            try:
                _write_all(fd, data)
            except OSError:
                self._close_locked(sync=False)
                raise
            self._unsynced = True
            if time.monotonic() - self._last_sync >= self._fsync_interval_s:
                self._sync_locked()

    def sync(self) -> None:
        """fsync if something was appended since the last one (the writer thread calls this on its
        cadence, so rows spooled by a quiet process do not wait for the next append)."""
        self._after_fork()
        with self._lock:
            if self._fd is not None and self._unsynced:
                self._sync_locked()

    def rotate(self) -> Path | None:
        """Close the current file (fsynced) and return its path, now claimable; None if none."""
        self._after_fork()
        with self._lock:
            path = self._path
            self._close_locked(sync=True)
            return path

    close = rotate

    def _after_fork(self) -> None:
        if self._pid != os.getpid():  # the parent's file and lock are not ours to use
            self._pid = os.getpid()
            self._lock = threading.Lock()  # may have been held by a parent thread at fork time
            if self._fd is not None:
                # Our copy of the descriptor would keep the parent's flock alive (and its file
                # unclaimable) for as long as we live; closing it leaves the parent's lock alone.
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = None
            self._path = None

    def _open_locked(self) -> int:
        if self._fd is not None:
            return self._fd
        self._fd, self._path = create_locked_file(self.directory, self.prefix)
        self._last_sync = time.monotonic()
        log.info("spooling to %s", self._path)
        return self._fd

    def _sync_locked(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
        self._last_sync = time.monotonic()
        self._unsynced = False

    def _close_locked(self, *, sync: bool) -> None:
        if self._fd is None:
            return
        if sync and self._unsynced:
            self._sync_locked()
        os.close(self._fd)  # releases the flock: the file may now be claimed
        self._fd, self._path = None, None


def _base_name(name: str) -> str:
    return name.split(CLAIM_MARK, 1)[0]


def _is_spool_name(name: str, prefixes: tuple[str, ...]) -> bool:
    return name.startswith(tuple(f"{prefix}-" for prefix in prefixes)) and _base_name(name).endswith(SUFFIX)


def spool_files(directory: Path, *, prefixes: tuple[str, ...] = REPLAYABLE) -> list[Path]:
    """Spool and journal files in `directory` (open, closed or being replayed), oldest first."""
    try:
        entries = [e for e in os.scandir(directory) if _is_spool_name(e.name, prefixes)]
    except OSError:  # missing, or not a folder: nothing to replay
        return []
    found = []
    for entry in entries:
        try:
            mtime = entry.stat().st_mtime
        except FileNotFoundError:
            # Claimed (renamed) or replayed (deleted) since the listing: still listed, last, so
            # that a count never misses a file that was only being renamed; claiming skips it.
            mtime = float("inf")
        found.append((mtime, Path(entry.path)))
    return [path for _, path in sorted(found)]


class ClaimedSpoolFile:
    """A spool file this process holds the lock of, renamed `<name>.replaying-<pid>`."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._file = os.fdopen(fd, "rb")

    def rows(self, on_bad_line: Callable[[int, bytes, bool], None]) -> Iterator[dict]:
        """The rows, in file order. A line that is not a JSON object goes to
        `on_bad_line(line_number, raw, is_truncated_last_line)` and is skipped."""
        self._file.seek(0)
        number = 0
        for raw in self._file:
            number += 1
            complete = raw.endswith(b"\n")
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError:
                if raw.strip():
                    on_bad_line(number, raw, not complete)
                continue
            yield row

    def done(self) -> None:
        """Every row is in the database: delete the file, then let go of the lock."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._file.close()

    def release(self) -> None:
        """Give the file back unreplayed (database down again): it keeps its claimed name and, its
        lock free, is claimed again later by whichever process gets to it first."""
        self._file.close()


def waiting_files(directory: Path) -> list[Path]:
    """The files whose rows wait for replay: every spool file, and the journal files of processes
    that died (a live owner holds its journal's lock)."""
    return [p for p in spool_files(directory) if not _is_live_journal(p)]


def _is_live_journal(path: Path) -> bool:
    return path.name.startswith(f"{JOURNAL_PREFIX}-") and CLAIM_MARK not in path.name and _is_locked(path)


def _is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases our probe lock, if we got it
    return False


def claim_next(directory: Path, *, prefixes: tuple[str, ...] = REPLAYABLE) -> ClaimedSpoolFile | None:
    """Claim the oldest spool or journal file nobody holds (its owner let go of it or died), or None."""
    for prefix in prefixes:
        _remove_abandoned_new_files(directory, prefix)
    for path in spool_files(directory, prefixes=prefixes):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # claimed or finished by someone else meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Between our open and our lock, another process may have claimed, replayed and
            # deleted it, or renamed it: only the file still at that path is ours.
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
            claimed = path.with_name(f"{_base_name(path.name)}{CLAIM_MARK}{os.getpid()}")
            os.rename(path, claimed)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            continue
        except OSError:
            os.close(fd)
            raise
        if path.name != _base_name(path.name):
            log.warning("claiming %s again: its replay was interrupted or its replayer died", path.name)
        return ClaimedSpoolFile(claimed, fd)
    return None


def _remove_abandoned_new_files(directory: Path, prefix: str) -> None:
    """A crash between creating a hidden `.spool-*.new` file and renaming it leaves it behind,
    empty (nothing is written before the rename). Remove old, unlocked, empty ones."""
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith(f".{prefix}-") and e.name.endswith(".new")]
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            st = entry.stat()
            if st.st_size or time.time() - st.st_mtime < _ABANDONED_NEW_FILE_S:
                continue
            fd = os.open(entry.path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(entry.path)
            finally:
                os.close(fd)
