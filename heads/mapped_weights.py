"""Head weights read in place from their `head.npz`, shared by every process of a host.

`np.load` copies each array of an .npz into the process's own memory, so every router worker
held its own copy of every head: at 1,000 heads, about 0.4 GB per worker. A version's files never
change (heads/artifact.py), and `np.savez` stores its arrays uncompressed, so each array can be a
read-only view of a memory map of the file instead: the pages come from the page cache, are
shared by every process that maps them, and count in a process's memory only once a request
touches them (a version's weights are still read once, to check their checksum, at load or
before the first answer, heads/weights_check.py, but into the page cache, not into the
process). A version folder is immutable: a file rewritten in place (not replaced by a rename,
as the registry and `aws s3 sync` do) would crash a process reading it.

`save_weights` writes the file as `np.savez` does (a plain .npz any numpy reads), but with each
array's data 64-byte aligned, padded through the zip extra field (the way Android's zipalign does
it), so that every array can be mapped; files of older versions map when their arrays happen to
be aligned for their type, which `np.savez` gives names of two characters and float32 data.

Mapped pages stay in a process's memory once touched: a worker that has answered for every one of
10,000 heads of 2.7 MB holds 27 GB of them. `RESIDENT` bounds that: every answer touches its
head's map (`ResidentMaps.touch`), and once the maps touched hold more than the budget, the least
recently touched give their pages back with madvise(MADV_DONTNEED). The pages stay in the page
cache (the file is unchanged), so the next answer of that head maps them again with minor faults.
Measured on 1,000 heads of 1.34 MB answered in random order (median, one thread, 3 busy threads
beside): 0.065 ms a forward pass with every head mapped; with a 256 MiB bound, which gives back a
head's pages at nearly every answer, 0.05 ms for the madvise and 0.13 ms for the forward pass
that maps the head again, about 0.11 ms more an answer. Traffic that favours some heads pays it
less often. A thread reading a head whose pages are given back meanwhile reads the same bytes.

One map per file, made with libc's mmap directly: Python's `mmap.mmap` keeps a duplicate file
descriptor open for as long as the map lives (until Python 3.13's `trackfd`), which at 10,000
heads would be 10,000 open files per worker. The map is released when the last array viewing it
is freed. A member that is compressed, not aligned for its type, or holds Python objects is not
mapped: the file is then read with `np.load`, as before.
"""

from __future__ import annotations

import ctypes
import io
import logging
import math
import mmap
import os
import re
import struct
import threading
import weakref
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local file header
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
# madvise through PyDLL, which keeps the GIL: the call takes about 0.05 ms, where releasing the GIL
# (as CDLL does) costs the thread up to the 5 ms switch interval to take it back from the
# worker's busy request threads (median 5.4 ms a call with three busy threads, against 0.05 ms).
_madvise = ctypes.PyDLL(None, use_errno=True).madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_MAP_FAILED = ctypes.c_void_p(-1).value


ALIGN = 64
_PADDING_ID = 0xD935  # the extra-field id zipalign uses for padding; zip readers skip unknown ids


def save_weights(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz of `arrays` in which each array's data starts 64-byte aligned."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            # numpy pads the .npy header to a multiple of 64, so the data is aligned when the
            # member's data is: pad the local header to put it there.
            unpadded = buffer.tell() + _LOCAL_HEADER.size + len(info.filename.encode()) + 4
            padding = -unpadded % ALIGN
            info.extra = struct.pack("<HH", _PADDING_ID, padding) + bytes(padding)
            archive.writestr(info, npy.getvalue())
    return buffer.getvalue()


class MappedFile:
    """One file's map, kept alive by whoever holds this (and by every array viewing it)."""

    __slots__ = ("address", "size", "_buffer", "__weakref__")

    def __init__(self, buffer):
        self._buffer = buffer
        self.address, self.size = ctypes.addressof(buffer), ctypes.sizeof(buffer)

    def drop_pages(self) -> None:
        """Give the map's pages back to the page cache: the process's memory no longer counts
        them; the next read maps them again."""
        if _madvise(self.address, self.size, mmap.MADV_DONTNEED) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"madvise: {os.strerror(errno)}")


class ResidentMaps:
    """The maps a process has read from, least recently touched first, within a budget of bytes
    (None: no bound). Holds them weakly: a head that is unloaded leaves it by itself."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget_bytes = budget_bytes
        self._maps: OrderedDict[int, tuple[weakref.ref, int]] = OrderedDict()  # address -> (the MappedFile, size)
        self._bytes = 0
        self._dropped = 0
        self._warned = False
        self._lock = threading.RLock()  # a weakref callback may run inside `touch` (a collection)

    def touch(self, mapped: MappedFile) -> None:
        if self.budget_bytes is None:
            return
        with self._lock:
            entry = self._maps.get(mapped.address)
            if entry is not None and entry[0]() is mapped:
                self._maps.move_to_end(mapped.address)
                return
            if entry is not None:  # a map gone from this address, not yet forgotten
                self._remove(mapped.address)
            self._maps[mapped.address] = (weakref.ref(mapped, self._forget_callback(mapped.address)), mapped.size)
            self._bytes += mapped.size
            while self._bytes > self.budget_bytes and len(self._maps) > 1:
                address, (oldest, size) = self._maps.popitem(last=False)
                self._bytes -= size
                victim = oldest()  # alive while held here: its map cannot go away under madvise
                if victim is None:
                    continue
                try:
                    victim.drop_pages()
                except OSError as exc:  # the pages stay: memory, never an answer, pays for it
                    if not self._warned:
                        self._warned = True
                        log.warning("cannot give mapped head weights back (%s); they stay in memory", exc)
                    continue
                self._dropped += 1

    def _remove(self, address: int) -> None:
        _, size = self._maps.pop(address)
        self._bytes -= size

    def _forget_callback(self, address: int):
        def forget(ref: weakref.ref) -> None:
            with self._lock:
                entry = self._maps.get(address)
                if entry is not None and entry[0] is ref:
                    self._remove(address)

        return forget

    def stats(self) -> dict:
        """The maps and bytes counted as resident now, and how many maps gave their pages back."""
        with self._lock:
            return {"maps": len(self._maps), "bytes": self._bytes, "dropped": self._dropped}


# The process's bound, set by the router at start (API_RESIDENT_HEAD_MB); unbounded elsewhere.
RESIDENT = ResidentMaps()


def load_weights(path: Path) -> tuple[dict[str, np.ndarray], MappedFile | None]:
    """(name -> array, the map they view, or None when the file was read into memory instead).
    Mapped arrays are read-only."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        try:
            layout = _member_layout(fd, size)
        except (struct.error, ValueError, EOFError):  # not a well-formed .npz: np.load says what is wrong
            layout = None
        mapped = MappedFile(_map(fd, size, path)) if layout is not None else None
    finally:
        os.close(fd)  # the map does not need the descriptor
    if mapped is None:
        with np.load(path, allow_pickle=False) as arrays:
            return dict(arrays), None
    buffer = memoryview(mapped._buffer).toreadonly()  # views that cannot be made writable
    arrays = {}
    for name, (offset, dtype, shape, fortran) in layout.items():
        flat = np.frombuffer(buffer, dtype=dtype, count=math.prod(shape), offset=offset)
        arrays[name] = flat.reshape(shape, order="F" if fortran else "C")
    return arrays, mapped


# The zip records read here (APPNOTE.TXT 4.3.12, 4.3.16), as np.savez and save_weights write them:
_END = struct.Struct("<4s4H2LH")  # end of central directory: disks, entries, directory size and offset, comment
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # a member's central directory header
_ZIP64 = (0xFFFF, 0xFFFFFFFF)  # a count, size or offset whose value is in a ZIP64 record instead
_NPY_PREFIX = 4096  # read at a member's data: the .npy magic and header (a longer header goes to np.load)


def _member_layout(fd: int, size: int) -> dict[str, tuple[int, np.dtype, tuple, bool]] | None:
    """Where each array's data starts in the file, or None when one of them cannot be mapped or
    the archive is not laid out as np.savez and save_weights lay it out (an archive comment,
    ZIP64 counts, sizes or offsets, several disks, a directory whose records and count disagree:
    np.load reads those). The zip directory is read here rather than with `zipfile`, whose
    archive and member objects took a tenth of the time to load 10,000 heads: a few reads of
    one descriptor. Each member must lie between the start of the file and the directory."""
    end_at = size - _END.size
    if end_at < 0:
        return None
    signature, disk, directory_disk, on_disk, entries, directory_size, directory_at, comment = _END.unpack(
        os.pread(fd, _END.size, end_at)
    )
    if signature != b"PK\x05\x06" or comment or disk or directory_disk or on_disk != entries:
        return None
    if entries in _ZIP64 or directory_at + directory_size != end_at:  # ZIP64 records between, or not a zip
        return None
    directory = os.pread(fd, directory_size, directory_at)
    layout, at = {}, 0
    for _ in range(entries):
        header = _CENTRAL.unpack_from(directory, at)
        flags, method, stored_size, plain_size = header[3], header[4], header[8], header[9]
        name_length, extra_length, comment_length, local_at = header[10], header[11], header[12], header[16]
        name = directory[at + _CENTRAL.size : at + _CENTRAL.size + name_length]
        at += _CENTRAL.size + name_length + extra_length + comment_length
        if header[0] != b"PK\x01\x02" or method != zipfile.ZIP_STORED or flags & 0x1 or stored_size != plain_size:
            return None  # another record, compressed or encrypted
        if stored_size in _ZIP64 or local_at in _ZIP64:
            return None
        if not name.endswith(b".npy") or len(name) != name_length or b"\0" in name:
            return None
        member = _array_at(fd, local_at, name, stored_size, directory_at)
        if member is None:
            return None
        layout[name[: -len(".npy")].decode("utf-8" if flags & 0x800 else "cp437")] = member
    if at != directory_size:  # records beyond the count (zipfile reads by size): not ours
        return None
    return layout


def _array_at(
    fd: int, local_at: int, name: bytes, stored_size: int, end: int
) -> tuple[int, np.dtype, tuple, bool] | None:
    """(data offset, dtype, shape, fortran order) of the .npy member `name` whose local header is
    at `local_at`, or None when its data cannot be viewed in place or would reach past `end`."""
    local = os.pread(fd, _LOCAL_HEADER.size + len(name), local_at)
    fields = _LOCAL_HEADER.unpack_from(local)
    if fields[0] != b"PK\x03\x04" or local[_LOCAL_HEADER.size :] != name:
        return None
    data_at = local_at + _LOCAL_HEADER.size + fields[9] + fields[10]
    if data_at + stored_size > end:  # the member would overlap the directory, or the file ends first
        return None
    npy = io.BytesIO(os.pread(fd, min(stored_size, _NPY_PREFIX), data_at))
    version = np.lib.format.read_magic(npy)
    if version not in _HEADER_LENGTH:
        return None
    shape, fortran, dtype = _read_header(npy, version)
    offset = data_at + npy.tell()
    if dtype.hasobject or not dtype.itemsize or offset % dtype.itemsize:
        return None
    if npy.tell() + math.prod(shape) * dtype.itemsize > stored_size:
        return None  # shorter than its header says: np.load says so
    return offset, dtype, shape, fortran


_HEADER_LENGTH = {(1, 0): struct.Struct("<H"), (2, 0): struct.Struct("<I")}
# The header numpy writes for a plain array, e.g. {'descr': '<f4', 'fortran_order': True,
# 'shape': (1152, 256), } and its padding. numpy's reader evaluates it as a Python literal, 4 times
# a head: the largest item after JSON in a profile of loading 10,000 heads. With this pattern and
# the cached file-name check of heads/manifest.py, one process loaded them in 24.1-26.3 s against
# 26.8-28.5 s (an AVX2 EPYC, no profiler). Any other header goes to numpy's reader.
_PLAIN_HEADER = re.compile(
    rb"\{'descr': '([<>|=][a-z][0-9]{1,2})', 'fortran_order': (True|False), 'shape': \(((?:[0-9]+, ?)*[0-9]*)\), \} *\n"
)


def _read_header(f, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy header at `f`'s position (just past the magic);
    leaves `f` at the array's data."""
    start = f.tell()
    length_field = _HEADER_LENGTH[version]
    (length,) = length_field.unpack(f.read(length_field.size))
    header = f.read(length)
    if len(header) != length:  # beyond what was read for it (or the file): never a prefix of it
        raise EOFError(f"a .npy header of {length} bytes, {len(header)} read")
    plain = _PLAIN_HEADER.fullmatch(header)
    if plain is None:
        f.seek(start)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return reader(f)
    descr, fortran, shape = plain.groups()
    return tuple(int(n) for n in shape.split(b",") if n.strip()), fortran == b"True", np.dtype(descr.decode())


def _map(fd: int, size: int, path: Path):
    """A read-only ctypes view of the whole file open at `fd`, unmapped when the last reference goes."""
    address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address in (None, _MAP_FAILED):
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot map {path}: {os.strerror(errno)}")
    buffer = (ctypes.c_char * size).from_address(address)
    # Not at interpreter exit: a daemon thread may still be reading a head then.
    weakref.finalize(buffer, _libc.munmap, address, size).atexit = False
    return buffer
