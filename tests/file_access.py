"""Make root obey file permission bits, so that tests can show what an unreadable folder does.

The suite runs as root in CI, and root ignores permission bits through two capabilities,
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. Without them root is an ordinary user towards the files
(the owner bits apply to it, the others' bits to what it does not own): what the router's own
unprivileged user meets in production. For a user without those capabilities both helpers change
nothing, and permission bits work as they always do.

(Running the router as `nobody` instead is not possible here: the virtual environment's python is
a link into root's home, which `nobody` cannot enter.)
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
PR_CAPBSET_DROP = 24
_CAPABILITY_VERSION_3 = 0x20080522
_libc = ctypes.CDLL(None, use_errno=True)


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def without_file_override() -> None:
    """A `preexec_fn`: the program the child executes, even as root, obeys permission bits
    (the two capabilities leave the child's bounding set, so an exec cannot grant them)."""
    if os.geteuid() != 0:
        return  # an ordinary user obeys them already (and may not change its bounding set)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "prctl(PR_CAPBSET_DROP)")


@contextmanager
def obeying_permissions() -> Iterator[None]:
    """The calling thread obeys permission bits until the block ends (capabilities are per thread:
    code run by other threads meanwhile is not affected)."""
    header, data = _Header(_CAPABILITY_VERSION_3, 0), (_Data * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    saved = data[0].effective
    data[0].effective &= ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH))
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    try:
        yield
    finally:
        data[0].effective = saved
        _check(_libc.capset(ctypes.byref(_Header(_CAPABILITY_VERSION_3, 0)), data), "capset")
