"""A version's weights checked against their checksum when first needed, not when loaded.

A router used to hash every head's weights before it could report ready: at 10,000 heads of
1.3-2.7 MB, 13-27 GB read and hashed at each first start of a host, which took 18 s on a host
whose page cache held the store and 30-81 s on one whose did not (the time grew with the store's
bytes, not with what serves). A router now loads a model it does not serve yet with a
`WeightsCheck` instead (api/core/live_heads.py): the manifest, the files' presence and the
weights' zip layout are read at load, and the checksum is computed

- before the head's first answer, in the request if nothing checked it earlier: no answer ever
  comes from weights that do not match their checksum;
- in the background, by the heads poller of each worker (in an order of its own; the host's
  record of verified weights, heads/known_checksums.py, lets each skip what the other did);
- at start, for as long as API_WEIGHTS_CHECK_AT_START_S allows: a store that small is checked
  whole before ready, as before.

A mismatch sticks (the file is not hashed again by this check) and the model is taken out of
serving with the reason, as a version that failed to load is; the next scans load it again,
checked at once, until its files match. A model that serves already is never given unchecked
weights: a new serving state of it is checked before it replaces the old one.
"""

from __future__ import annotations

import threading
from pathlib import Path

from embedder.convert import sha256_file
from heads.errors import ArtifactError
from heads.known_checksums import KnownChecksums


def weights_match(file: Path, expected: str, known: KnownChecksums | None) -> bool:
    """Whether `file`'s SHA-256 is `expected`, from the host's record when it has this very file."""
    return known.matches(file, expected) if known is not None else sha256_file(file) == expected


class WeightsCheck:
    """The pending check of one version's weights file; thread-safe, hashes at most once."""

    __slots__ = ("file", "expected", "verified", "failure", "_known", "_lock")

    def __init__(self, file: Path, expected: str, known: KnownChecksums | None = None):
        self.file, self.expected = Path(file), expected
        self.verified = False
        self.failure: str | None = None  # why the weights cannot serve, once found
        self._known = known
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Return once the weights match their checksum; ArtifactError when they do not (or
        cannot be read). Threads that ask together wait for one hashing."""
        if self.verified:
            return
        with self._lock:
            if not self.verified and self.failure is None:
                try:
                    if weights_match(self.file, self.expected, self._known):
                        self.verified = True
                    else:
                        self.failure = (
                            f"{self.file.parent}: {self.file.name} does not match its checksum (corrupt version)"
                        )
                except OSError as exc:
                    self.failure = f"{self.file.parent}: cannot read {self.file.name} ({exc.strerror or exc})"
        if self.failure is not None:
            raise ArtifactError(self.failure)

    @property
    def pending(self) -> bool:
        """Not hashed yet."""
        return not self.verified and self.failure is None
