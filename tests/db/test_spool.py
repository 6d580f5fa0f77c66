"""The spool's claim protocol: a file is replayed by one process at a time, never while its
owner may still append to it, and a claim dies with its claimer."""

from __future__ import annotations

import os
from pathlib import Path

from inferencedb.spool import CLAIM_MARK, SpoolWriter, claim_next, spool_files


def test_an_open_spool_file_cannot_be_claimed_until_its_owner_closes_it(tmp_path: Path):
    writer = SpoolWriter(tmp_path)
    writer.append([{"n": 1}])
    assert claim_next(tmp_path) is None  # locked by its owner (even within the same process)
    path = writer.rotate()
    writer.append([{"n": 2}])  # appends go to a new file from now on
    assert writer.path != path

    claimed = claim_next(tmp_path)
    assert claimed is not None and claimed.path.name == f"{path.name}{CLAIM_MARK}{os.getpid()}"
    assert [row for row in claimed.rows(lambda *a: None)] == [{"n": 1}]
    assert claim_next(tmp_path) is None  # held by us: nobody else gets it; the new file is open

    claimed.release()  # replay interrupted: the file is claimable again, under its claimed name
    again = claim_next(tmp_path)
    assert again is not None and again.path == claimed.path
    again.done()
    assert not claimed.path.exists()
    assert spool_files(tmp_path) == [writer.path]
    writer.close()


def test_bad_lines_are_reported_and_skipped(tmp_path: Path):
    path = tmp_path / "spool-1-abc.jsonl"
    path.write_bytes(b'{"n": 1}\nnot json\n[1, 2]\n{"n": 2}\n{"n": 3, "trunc')
    claimed = claim_next(tmp_path)
    bad: list[tuple[int, bool]] = []
    rows = list(claimed.rows(lambda number, raw, truncated: bad.append((number, truncated))))
    assert rows == [{"n": 1}, {"n": 2}]
    assert bad == [(2, False), (3, False), (5, True)]
    claimed.done()
