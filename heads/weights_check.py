"""A version's weights checked against their checksum when first needed, not when loaded.

A router used to hash every head's weights before it could report ready: at 10,000 heads of
1.3-2.7 MB, 13-27 GB read and hashed at each first start of a host, which took 21 s on a host
whose page cache held the store and 62 s on one whose did not (`make bench-scale`: the time grew
with the store's bytes, not with what serves). A router now loads a model it does not serve yet
with a `WeightsCheck` instead (api/core/live_heads.py): the manifest, the files' presence and the
weights' zip layout are read at load, and the checksum is computed

- before the head's first answer, in the request, if nothing checked it earlier;
- in the background, by the heads poller of each worker (in an order of its own; the host's
  record of verified weights, heads/known_checksums.py, lets each skip what the other did);
- at start, for as long as API_WEIGHTS_CHECK_AT_START_S allows: a store that small is checked
  whole before ready, as before.

The check is bound to the file that was loaded: the identity `stat` gave of it then (device,
inode, size, modification time) must still be the path's before and after the hashing, so a
version whose file was replaced since (a sync, a repair) fails the check instead of vouching,
with the new file's bytes, for the mapped old ones (the change time is left out: a chmod or a
new hard link changes it, not the bytes). A load that checks at once is bound the same way
(heads/artifact.py). What neither catches is a file's bytes changed in place under the same
inode, size and modification time, as for heads/known_checksums.py.

A failure sticks (the file is not hashed again by this check) and the model is taken out of
serving with the reason, as a version that failed to load is; the next scans load it again,
checked at once, until its files match. A model that serves already is never given unchecked
weights: a new serving state of it is checked before it replaces the old one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from embedder.convert import sha256_file
from heads.errors import ArtifactError
from heads.known_checksums import KnownChecksums


def identity(stat: os.stat_result) -> tuple[int, ...]:
    """What tells one file from its replacement at the same path, or from its bytes rewritten."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def weights_match(file: Path, expected: str, known: KnownChecksums | None) -> bool:
    """Whether `file`'s SHA-256 is `expected`, from the host's record when it has this very file."""
    return known.matches(file, expected) if known is not None else sha256_file(file) == expected


class WeightsCheck:
    """The pending check of one version's weights file; thread-safe, hashes at most once."""

    __slots__ = ("file", "expected", "loaded", "verified", "failure", "_known", "_lock")

    def __init__(self, file: Path, expected: str, loaded: tuple[int, ...], known: KnownChecksums | None = None):
        """`loaded`: the identity() of the file whose bytes the head was built from."""
        self.file, self.expected, self.loaded = Path(file), expected, loaded
        self.verified = False
        self.failure: str | None = None  # why the weights cannot serve, once found (no folder named)
        self._known = known
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Return once the weights match their checksum; ArtifactError when they do not (or
        cannot be read). Threads that ask together wait for one hashing."""
        if self.verified:
            return
        with self._lock:
            if not self.verified and self.failure is None:
                self.failure = self._check()
                self.verified = self.failure is None
        if self.failure is not None:
            raise self.error()

    def error(self) -> ArtifactError:
        """The failure as the loader words one: the version's folder, then why."""
        return ArtifactError(f"{self.file.parent}: {self.failure}")

    def _check(self) -> str | None:
        """None when the loaded file matches its checksum, else why not."""
        where = self.file.name
        changed = f"{where} changed since it was loaded (replaced or rewritten): loaded again at the next scan"
        try:
            if identity(os.stat(self.file)) != self.loaded:
                return changed
            matches = weights_match(self.file, self.expected, self._known)
            if identity(os.stat(self.file)) != self.loaded:  # replaced while it was hashed
                return changed
        except OSError as exc:
            return f"cannot read {where} ({exc.strerror or type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - a fault of the check itself must not pass as a match
            return f"the checksum of {where} could not be computed ({type(exc).__name__})"
        return None if matches else f"{where} does not match its checksum (corrupt version)"

    @property
    def pending(self) -> bool:
        """Not hashed yet."""
        return not self.verified and self.failure is None
