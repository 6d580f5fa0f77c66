"""A host hashes each weights file once: the record of verified checksums (heads/known_checksums.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from embedder.convert import sha256_file
from heads import known_checksums
from heads.known_checksums import KnownChecksums
from heads.mapped_weights import save_weights


@pytest.fixture
def hashed(monkeypatch):
    """The files hashed, in order."""
    calls = []
    real = known_checksums.sha256_file

    def counting(path):
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(known_checksums, "sha256_file", counting)
    return calls


def _weights(path, value: float):
    path.write_bytes(save_weights({"W": np.full((64, 8), value, np.float32)}))
    return sha256_file(path)


@pytest.mark.parametrize("size", [0, 1, (1 << 18) - 1, 1 << 18, (1 << 20) + 7])
def test_a_file_hashes_as_its_bytes_do(tmp_path, size):
    # sha256_file reads through a reused buffer: every size around its length hashes whole
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_a_file_is_hashed_once_per_host_and_again_once_it_changes(tmp_path, hashed):
    head = tmp_path / "head.npz"
    expected = _weights(head, 1.0)
    record = tmp_path / "spool" / "verified-weights"  # its folder need not exist yet
    first = KnownChecksums(record)
    assert first.matches(head, expected) and first.matches(head, expected)
    assert hashed == ["head.npz"]
    assert KnownChecksums(record).matches(head, expected)  # another process of the router, or a restart
    assert hashed == ["head.npz"]

    os.utime(head, ns=(1, 1))  # the same bytes with other times: hashed again (and recorded again)
    assert first.matches(head, expected) and hashed == ["head.npz"] * 2

    other = tmp_path / "other.npz"
    _weights(other, 2.0)
    os.replace(other, head)  # replaced by a rename, as the registry and `aws s3 sync` do
    assert not first.matches(head, expected) and not first.matches(head, expected)
    assert hashed == ["head.npz"] * 4  # a mismatch is never recorded: it is hashed every time


def test_a_corrupt_file_fails_however_its_checksum_was_recorded_before(tmp_path, hashed):
    head = tmp_path / "head.npz"
    expected = _weights(head, 1.0)
    record = tmp_path / "verified-weights"
    assert KnownChecksums(record).matches(head, expected)
    with open(head, "r+b") as f:  # modified in place: its times change
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x7f")
    assert not KnownChecksums(record).matches(head, expected)
    assert len(hashed) == 2


def test_processes_share_the_record_as_they_go_and_an_unwritable_one_means_hashing(tmp_path, hashed):
    heads = [tmp_path / f"h{i}.npz" for i in range(3)]
    sums = [_weights(h, float(i)) for i, h in enumerate(heads)]
    record = tmp_path / "verified-weights"
    mine = KnownChecksums(record)
    assert mine.matches(heads[0], sums[0])
    script = (
        "import sys; from pathlib import Path; from heads.known_checksums import KnownChecksums;"
        "k = KnownChecksums(Path(sys.argv[1]));"
        "print(all(k.matches(Path(p), s) for p, s in zip(sys.argv[2::2], sys.argv[3::2])))"
    )
    args = [str(record)] + [x for h, s in zip(heads[1:], sums[1:]) for x in (str(h), s)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"
    assert all(mine.matches(h, s) for h, s in zip(heads, sums))  # what the sibling recorded, read now
    assert hashed == ["h0.npz"]
    assert len(record.read_text().splitlines()) == 3

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    nowhere = KnownChecksums(blocked / "verified-weights")  # cannot be written: hashes once per process
    assert nowhere.matches(heads[0], sums[0]) and nowhere.matches(heads[0], sums[0])
    assert hashed == ["h0.npz"] * 2
    assert KnownChecksums(blocked / "verified-weights").matches(heads[0], sums[0]) and hashed == ["h0.npz"] * 3


def test_a_file_this_process_knows_costs_no_read_of_the_record(tmp_path, hashed, monkeypatch):
    heads = [tmp_path / f"h{i}.npz" for i in range(3)]
    sums = [_weights(h, float(i)) for i, h in enumerate(heads)]
    record = tmp_path / "verified-weights"
    assert all(KnownChecksums(record).matches(h, s) for h, s in zip(heads, sums))
    reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        reads.append(os.path.basename(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(known_checksums, "open", counting_open, raising=False)
    restarted = KnownChecksums(record)
    for _ in range(3):  # a restart reloading 3 heads, then two reloads of them
        assert all(restarted.matches(h, s) for h, s in zip(heads, sums))
    assert reads == ["verified-weights"] and hashed == ["h0.npz", "h1.npz", "h2.npz"]
