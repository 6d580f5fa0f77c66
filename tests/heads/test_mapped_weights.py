"""Head weights are read in place from head.npz: one shared read-only map, no copy, no open file."""

from __future__ import annotations

import gc
import io
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from heads import mapped_weights
from heads.mapped_weights import ResidentMaps, load_weights, save_weights


def _maps_of(path) -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.rstrip().endswith(str(path)))


def test_every_array_is_a_read_only_view_of_one_map_and_nothing_stays_open(tmp_path):
    expected = {"W0": np.random.rand(384, 32).astype(np.float32), "b0": np.arange(32, dtype=np.float32)}
    expected["W1"] = np.asfortranarray(np.random.rand(32, 5).astype(np.float32))
    path = tmp_path / "head.npz"
    path.write_bytes(save_weights(expected))
    with np.load(path) as plain:  # still an .npz that numpy reads
        assert all(np.array_equal(plain[k], v) for k, v in expected.items())
    fds = len(os.listdir("/proc/self/fd"))
    arrays, mapped = load_weights(path)
    assert mapped and set(arrays) == set(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(arrays[name], array)
        assert not arrays[name].flags.writeable and arrays[name].flags.aligned
    assert _maps_of(path) == 1 and len(os.listdir("/proc/self/fd")) == fds  # one map, no descriptor kept
    with pytest.raises(ValueError, match="read-only"):
        arrays["W0"][0, 0] = 1.0
    with pytest.raises(ValueError):
        arrays["W0"].flags.writeable = True  # a write would crash the process: it cannot be allowed
    x = np.random.rand(4, 384).astype(np.float32)
    np.testing.assert_array_equal(x @ arrays["W0"], x @ expected["W0"])
    del arrays, mapped
    gc.collect()
    assert _maps_of(path) == 0  # released with the last array and the map's handle


def test_files_that_cannot_be_mapped_are_read_as_before(tmp_path):
    compressed, unaligned = tmp_path / "compressed.npz", tmp_path / "unaligned.npz"
    np.savez_compressed(compressed, W=np.ones((3, 2), np.float32), b=np.zeros(2, np.float32))
    np.savez(unaligned, W=np.ones((3, 2), np.float32))  # "W.npy": its data lands at an odd offset
    for path in (compressed, unaligned):
        arrays, mapped = load_weights(path)
        assert not mapped and arrays["W"].sum() == 6 and arrays["W"].flags.writeable


def _zipfile_layout(path) -> dict[str, int]:
    """Each member's data offset as the standard library's zipfile finds it (the reference)."""
    out = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            f.seek(info.header_offset + 26)
            name_length, extra_length = struct.unpack("<HH", f.read(4))
            out[info.filename.removesuffix(".npy")] = info.header_offset + 30 + name_length + extra_length
    return out


def test_the_zip_directory_reads_as_zipfile_reads_it(tmp_path):
    """mapped_weights reads the zip records itself: every member, at the offset zipfile finds,
    and anything np.savez does not write goes to np.load."""
    arrays = {"W0": np.random.rand(40, 8).astype(np.float32), "b0": np.arange(8, dtype=np.float32)}
    arrays["W1"] = np.asfortranarray(np.random.rand(8, 3))
    arrays["é"] = np.arange(3, dtype=np.int64)  # a name that is not ASCII (the UTF-8 flag)
    ours, numpys = tmp_path / "ours.npz", tmp_path / "numpys.npz"
    ours.write_bytes(save_weights(arrays))
    np.savez(numpys, ab=np.ones((16, 4), np.float32), cd=np.zeros(4, np.float32))  # two-letter names: aligned
    for path in (ours, numpys):
        with open(path, "rb") as f:
            layout = mapped_weights._member_layout(f.fileno(), os.fstat(f.fileno()).st_size)
        reference = _zipfile_layout(path)
        assert set(layout) == set(reference)
        with np.load(path) as expected:
            for name, (offset, dtype, shape, fortran) in layout.items():
                npy_header_length = offset - reference[name]
                assert 64 <= npy_header_length <= 256 and offset % dtype.itemsize == 0
                assert dtype == expected[name].dtype and shape == expected[name].shape
                assert fortran == (expected[name].flags.f_contiguous and expected[name].ndim > 1)
        loaded, mapped = load_weights(path)
        assert mapped is not None
        with np.load(path) as expected:
            assert all(np.array_equal(loaded[k], expected[k]) for k in expected.files)

    # an archive comment, a member that is not an array, a member whose data is cut short
    commented, other, short = tmp_path / "commented.npz", tmp_path / "other.npz", tmp_path / "short.npz"
    commented.write_bytes(save_weights(arrays))
    with zipfile.ZipFile(commented, "a") as archive:
        archive.comment = b"made by hand"
    other.write_bytes(save_weights(arrays))
    with zipfile.ZipFile(other, "a") as archive:
        archive.writestr("README.txt", "not an array")
    for path in (commented, other):
        with open(path, "rb") as f:
            assert mapped_weights._member_layout(f.fileno(), os.fstat(f.fileno()).st_size) is None
    loaded, mapped = load_weights(commented)
    assert mapped is None and np.array_equal(loaded["W0"], arrays["W0"])
    long_header = tmp_path / "long_header.npz"  # a .npy header beyond the bytes read for it
    fields = np.zeros(2, dtype=[(f"field_{i}", "<f4") for i in range(400)])
    long_header.write_bytes(save_weights({"W": arrays["W0"], "fields": fields}))
    loaded, mapped = load_weights(long_header)
    assert mapped is None and np.array_equal(loaded["fields"], fields)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # a header promising 1,000 floats, 40 bytes of them
        npy = io.BytesIO()
        np.lib.format.write_array(npy, np.zeros(1000, np.float32))
        archive.writestr("W.npy", npy.getvalue()[:168])
    short.write_bytes(buffer.getvalue())
    with open(short, "rb") as f:
        assert mapped_weights._member_layout(f.fileno(), os.fstat(f.fileno()).st_size) is None
    with pytest.raises(ValueError):
        load_weights(short)  # numpy's own error


def _stored_zip(members: dict[str, bytes]) -> bytearray:
    """An uncompressed zip of raw member bytes, each member's data 64-byte aligned; returned for patching."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            padding = -(buffer.tell() + 30 + len(name.encode()) + 4) % 64
            info.extra = struct.pack("<HH", 0xD935, padding) + bytes(padding)
            archive.writestr(info, data)
    return bytearray(buffer.getvalue())


def _loads_as_numpy_does(path) -> None:
    """load_weights gives np.load's arrays for `path`, mapped or not, or fails where np.load fails."""
    try:
        with np.load(path) as expected:
            want = {name: expected[name] for name in expected.files}
    except Exception as numpy_error:  # noqa: BLE001 - whatever numpy says
        with pytest.raises(type(numpy_error)):
            load_weights(path)
        return
    got, _ = load_weights(path)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want), path.name


def test_archives_laid_out_otherwise_are_never_mapped_wrongly(tmp_path):
    """Files np.savez does not write, made to mislead a zip reader that trusts one record: each
    reads as np.load reads it (cases found by review of the directory reader)."""
    floats = np.arange(8, dtype="<f4")
    # a .npy header longer than the bytes read for it, whose first 4 KB look like a whole header
    plain = b"{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }"
    first = plain + b" " * (4096 - 10 - len(plain) - 1) + b"\n"
    rest = b" " * (5000 - len(first) - 1) + b"\n"
    long_header = b"\x93NUMPY\x01\x00" + struct.pack("<H", 5000) + first + rest + floats.tobytes()
    (tmp_path / "long_header.npz").write_bytes(_stored_zip({"W.npy": long_header}))

    def npy(array) -> bytes:
        out = io.BytesIO()
        np.lib.format.write_array(out, array)
        return out.getvalue()

    # the end record counting fewer members than the directory holds (a second "W.npy" last)
    buffer = io.BytesIO(bytes(_stored_zip({"W.npy": npy(np.zeros(4, "<f4"))})))
    with zipfile.ZipFile(buffer, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr(zipfile.ZipInfo("W.npy", date_time=(1980, 1, 1, 0, 0, 0)), npy(floats))
    undercounted = bytearray(buffer.getvalue())
    struct.pack_into("<HH", undercounted, len(undercounted) - 22 + 8, 1, 1)
    (tmp_path / "undercounted.npz").write_bytes(undercounted)

    # a member whose declared size runs into the directory, and one past the end of the file
    for name, grow in (("into_directory", 8), ("past_the_end", 1 << 20)):
        patched = _stored_zip({"W.npy": npy(floats)})
        directory_at = struct.unpack_from("<L", patched, len(patched) - 22 + 16)[0]
        for field in (20, 24):  # the central header's stored and plain sizes
            size = struct.unpack_from("<L", patched, directory_at + field)[0]
            struct.pack_into("<L", patched, directory_at + field, size + grow)
        (tmp_path / f"{name}.npz").write_bytes(patched)

    # a dtype of no bytes, and a member name holding a NUL
    (tmp_path / "empty_dtype.npz").write_bytes(_stored_zip({"W.npy": npy(np.zeros(3, dtype=[]))}))
    named = bytes(_stored_zip({"W_x.npy": npy(floats)}))  # zipfile cuts names at a NUL: patched in
    (tmp_path / "nul_name.npz").write_bytes(named.replace(b"W_x.npy", b"W\0x.npy"))

    for path in sorted(tmp_path.glob("*.npz")):
        with open(path, "rb") as f:
            try:
                layout = mapped_weights._member_layout(f.fileno(), os.fstat(f.fileno()).st_size)
            except (struct.error, ValueError, EOFError):  # what load_weights hands to np.load
                layout = None
        assert layout is None, path.name
        _loads_as_numpy_does(path)


def test_a_damaged_file_is_an_error_from_numpy_not_a_crash(tmp_path):
    path = tmp_path / "head.npz"
    buffer = io.BytesIO()
    np.savez(buffer, W=np.ones((64, 64), np.float32))
    path.write_bytes(buffer.getvalue()[:200])
    with pytest.raises((zipfile.BadZipFile, ValueError, OSError, EOFError)):
        load_weights(path)


def test_two_processes_share_the_pages_of_one_head(tmp_path):
    """What the router's workers do: each maps the file; its pages are counted once on the host
    (shared in both processes' smaps), not once per process."""
    path = tmp_path / "head.npz"
    path.write_bytes(save_weights({"W": np.random.rand(1024, 256).astype(np.float32)}))  # 1 MiB
    reader = (
        "import sys, numpy as np; from heads.mapped_weights import load_weights;"
        "a, m = load_weights(sys.argv[1]); s = float(a['W'].sum()); print(m is not None, s, flush=True); sys.stdin.read()"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", reader, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().startswith("True")
        for p in procs:
            with open(f"/proc/{p.pid}/smaps") as smaps:
                lines = smaps.read().split("\n")
            start = next(i for i, line in enumerate(lines) if line.endswith(str(path)))
            fields = dict(line.split(":", 1) for line in lines[start + 1 : start + 20] if ":" in line)
            kb = {k: int(v.split()[0]) for k, v in fields.items() if v.strip().endswith("kB")}
            assert kb["Rss"] >= 1000 and kb["Pss"] <= kb["Rss"] * 0.6  # about half: shared by two
            assert kb["Private_Clean"] + kb["Private_Dirty"] == 0
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(10)


def _rss_kb(path) -> int:
    """Resident kB of this process's map of `path` (0 when it is not mapped)."""
    with open("/proc/self/smaps") as smaps:
        lines = smaps.read().split("\n")
    total = 0
    for i, line in enumerate(lines):
        if line.endswith(str(path)):
            rss = next(entry for entry in lines[i + 1 : i + 20] if entry.startswith("Rss:"))
            total += int(rss.split()[1])
    return total


def _heads(tmp_path, count: int, mib: int = 1) -> tuple[list, list]:
    """`count` weights files of `mib` MiB each, mapped: (their paths, their (arrays, map))."""
    paths, loaded = [], []
    for i in range(count):
        path = tmp_path / f"head{i}.npz"
        path.write_bytes(save_weights({"W": np.full((mib * 1024, 256), i + 1, np.float32)}))
        paths.append(path)
        loaded.append(load_weights(path))
    return paths, loaded


def test_the_least_recently_touched_maps_give_their_pages_back_beyond_the_budget(tmp_path):
    paths, loaded = _heads(tmp_path, 3)
    resident = ResidentMaps(budget_bytes=int(2.5 * 2**20))
    for i, (arrays, mapped) in enumerate(loaded):  # what an answer does: touch, then read
        resident.touch(mapped)
        assert float(arrays["W"][:, 0].sum()) == (i + 1) * 1024 and arrays["W"].min() == i + 1
    assert [_rss_kb(p) >= 1000 for p in paths] == [False, True, True]  # the first was dropped
    assert resident.stats()["dropped"] == 1 and resident.stats()["maps"] == 2
    arrays, mapped = loaded[0]
    resident.touch(mapped)  # asked again: its pages come back from the page cache, unchanged
    assert arrays["W"].min() == arrays["W"].max() == 1
    assert [_rss_kb(p) >= 1000 for p in paths] == [True, False, True]  # now the second went
    assert resident.stats() == {"maps": 2, "bytes": sum(m.size for _, m in (loaded[0], loaded[2])), "dropped": 2}


def test_a_released_head_leaves_the_bound_and_no_bound_touches_nothing(tmp_path):
    paths, loaded = _heads(tmp_path, 2)
    resident = ResidentMaps(budget_bytes=10 * 2**20)
    for arrays, mapped in loaded:
        resident.touch(mapped)
        arrays["W"].sum()
    assert resident.stats()["maps"] == 2
    del loaded[0], arrays, mapped
    gc.collect()
    assert _maps_of(paths[0]) == 0  # unmapped once its arrays and map are gone ...
    assert resident.stats()["maps"] == 1  # ... and no longer counted (nor ever advised again)
    unbounded = ResidentMaps()
    unbounded.touch(loaded[0][1])
    assert unbounded.stats() == {"maps": 0, "bytes": 0, "dropped": 0}


def test_a_served_head_touches_the_process_bound(tmp_path, monkeypatch):
    """HeadArtifact.predict_proba, the one way serving runs a head, counts its map in RESIDENT."""
    from heads.artifact import commit_version, load_version, stage_version
    from heads.embedding import EmbedderIdentity
    from heads.manifest import Decision, Manifest
    from heads.network import DenseHead

    monkeypatch.setattr(mapped_weights, "RESIDENT", ResidentMaps(budget_bytes=1))  # keeps only the newest
    monkeypatch.setattr("heads.artifact.RESIDENT", mapped_weights.RESIDENT)
    rng = np.random.default_rng(0)
    artifacts = []
    for version in ("v1", "v2"):
        head = DenseHead((rng.normal(size=(8, 3)).astype(np.float32),), (np.zeros(3, np.float32),), "relu")
        staging = tmp_path / f"staging-{version}"
        staging.mkdir()
        manifest = Manifest(
            model="intents",
            version=version,
            labels=("a", "b", "c"),
            decision=Decision(0.0),
            architecture={"type": "mlp", "hidden_layers": [], "activation": "relu", "dropout": 0.0},
            embedder=EmbedderIdentity("enc@1", "enc", "1", 8),
        )
        stage_version(staging, head, manifest)
        commit_version(staging, tmp_path / version)
        artifacts.append((load_version(tmp_path / version), head))
    x = rng.normal(size=(2, 8)).astype(np.float32)
    for artifact, head in artifacts * 2:
        assert artifact.weights_map is not None
        # column-major weights against row-major ones: equal up to BLAS's summation order
        np.testing.assert_allclose(artifact.predict_proba(x), head.probabilities(x), rtol=1e-4, atol=1e-7)
    assert mapped_weights.RESIDENT.stats()["dropped"] == 3  # each answer dropped the other head's pages


def test_giving_pages_back_keeps_the_gil():
    """A call that released the GIL waited up to the switch interval (5 ms) to take it back from
    the worker's busy request threads, at nearly every answer of a router over its bound (median
    5.4 ms against 0.05 ms, heads/mapped_weights.py). Timed by the benchmark, not here."""
    import ctypes

    assert mapped_weights._madvise._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # PyDLL: the GIL is kept


def test_pages_that_cannot_be_given_back_cost_memory_not_an_answer(tmp_path, monkeypatch, caplog):
    _, loaded = _heads(tmp_path, 3)

    def refused(self):
        raise OSError(22, "madvise: Invalid argument")

    monkeypatch.setattr(mapped_weights.MappedFile, "drop_pages", refused)
    resident = ResidentMaps(budget_bytes=2**20)
    for arrays, mapped in loaded * 2:
        resident.touch(mapped)  # never raises
        assert arrays["W"].sum() > 0
    assert resident.stats()["dropped"] == 0 and resident.stats()["maps"] == 1
    assert caplog.text.count("cannot give mapped head weights back") == 1  # said once


@pytest.mark.parametrize("version", [(1, 0), (2, 0), None])
def test_array_headers_read_as_numpy_reads_them(version):
    """The header pattern (mapped_weights._read_header) against numpy's own reader, for every kind
    of header numpy writes: plain ones take the pattern, the rest go to numpy."""
    arrays = [
        np.zeros((1152, 256), np.float32),
        np.asfortranarray(np.zeros((1152, 256), np.float32)),
        np.zeros(256, np.float32),
        np.zeros((), np.float64),
        np.zeros((0, 3), ">i8"),
        np.zeros((2, 3, 4), np.uint8),
        np.zeros(5, np.bool_),
        np.zeros(4, np.complex128),
        np.array(["a", "bc"]),  # '<U2': numpy's reader
        np.zeros(3, [("length", ">i4"), ("value", ">f8")]),  # a structured dtype: numpy's reader
    ]
    for array in arrays:
        npy = io.BytesIO()
        np.lib.format.write_array(npy, array, version=version)
        npy.seek(0)
        found = np.lib.format.read_magic(npy)
        header = mapped_weights._read_header(npy, found)
        data_at = npy.tell()
        npy.seek(0)
        np.lib.format.read_magic(npy)
        reader = np.lib.format.read_array_header_1_0 if found == (1, 0) else np.lib.format.read_array_header_2_0
        assert header == reader(npy) and data_at == npy.tell(), array.dtype
        text = npy.getvalue()[8 + (2 if found == (1, 0) else 4) : data_at]
        plain = mapped_weights._PLAIN_HEADER.fullmatch(text) is not None
        assert plain == (array.dtype.kind in "fiubc" and array.dtype.names is None), text
