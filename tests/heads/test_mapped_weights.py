"""Head weights are read in place from head.npz: one shared read-only map, no copy, no open file."""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from heads.mapped_weights import load_weights, save_weights


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
    del arrays
    gc.collect()
    assert _maps_of(path) == 0  # released with the last array


def test_files_that_cannot_be_mapped_are_read_as_before(tmp_path):
    compressed, unaligned = tmp_path / "compressed.npz", tmp_path / "unaligned.npz"
    np.savez_compressed(compressed, W=np.ones((3, 2), np.float32), b=np.zeros(2, np.float32))
    np.savez(unaligned, W=np.ones((3, 2), np.float32))  # "W.npy": its data lands at an odd offset
    for path in (compressed, unaligned):
        arrays, mapped = load_weights(path)
        assert not mapped and arrays["W"].sum() == 6 and arrays["W"].flags.writeable


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
        "a, m = load_weights(sys.argv[1]); s = float(a['W'].sum()); print(m, s, flush=True); sys.stdin.read()"
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
