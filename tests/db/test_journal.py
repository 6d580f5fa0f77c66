"""The write-ahead journal (inferencedb/journal.py): a row is on disk before `log()` returns, deleted
once committed, left for replay when not, and a process killed with rows in memory loses none."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from inferencedb.inference_log import InferenceLog
from inferencedb.journal import Journal
from inferencedb.spool import JOURNAL_PREFIX, SPOOL_PREFIX, claim_next, spool_files, waiting_files
from tests.db import workers
from tests.db.helpers import query, wait_until
from tests.db.test_inference_log import FAST, counts, drained


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_a_line_is_on_disk_when_append_returns_and_its_segment_is_held(tmp_path: Path):
    journal = Journal(tmp_path)
    segment = journal.append(b'{"n":1}\n')
    assert segment.path.name.startswith(f"{JOURNAL_PREFIX}-{os.getpid()}-")
    assert lines(segment.path) == [{"n": 1}]  # another process reading the file sees it now
    assert claim_next(tmp_path) is None  # locked: nobody replays rows its owner may still commit
    assert waiting_files(tmp_path) == []
    journal.close()


def test_a_committed_segment_is_deleted_and_an_uncommitted_one_left_for_replay(tmp_path: Path):
    journal = Journal(tmp_path, segment_max_age_s=0.0)
    done = [journal.append(b'{"n":%d}\n' % i) for i in range(3)]
    journal.maintain()  # sealed (old enough), not finished: two rows still pending
    journal.resolve(done[:2], committed=True)
    assert done[0].path.exists()
    journal.resolve(done[2:], committed=True)
    assert not done[0].path.exists() and spool_files(tmp_path) == []

    failed = [journal.append(b'{"n":%d}\n' % i) for i in range(3, 5)]
    journal.resolve(failed, committed=False)
    assert journal.dirty_segments == 1 and claim_next(tmp_path) is None  # still current: held
    journal.maintain()
    (left,) = spool_files(tmp_path)
    assert left.name.startswith(f"{SPOOL_PREFIX}-") and lines(left) == [{"n": 3}, {"n": 4}]
    assert journal.dirty_segments == 0 and waiting_files(tmp_path) == [left]


def test_close_leaves_unresolved_rows_for_replay_and_deletes_the_rest(tmp_path: Path):
    journal = Journal(tmp_path, segment_max_bytes=20)  # a new segment every two lines or so
    segments = [journal.append(b'{"n":%d}\n' % i) for i in range(6)]
    journal.resolve(segments[:4], committed=True)
    journal.close()
    replayable = [row for path in spool_files(tmp_path) for row in lines(path)]
    assert {4, 5} <= {row["n"] for row in replayable}  # nothing unresolved is gone
    assert all(path.name.startswith(f"{SPOOL_PREFIX}-") for path in spool_files(tmp_path))


def test_a_full_disk_is_an_error_the_caller_sees(tmp_path: Path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(OSError):
        Journal(not_a_folder).append(b"{}\n")


@pytest.mark.parametrize("batch_size", [100_000, 100], ids=["none-committed", "committed-before-the-kill"])
def test_a_process_killed_with_rows_in_memory_loses_none(db: str, tmp_path: Path, batch_size: int):
    """SIGKILL a logging process whose writer committed none of its rows (or had committed them,
    its journal segment not yet deleted): its successor replays the journal, and every row is in
    the table exactly once."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    process = ctx.Process(
        target=workers.log_then_wait_to_be_killed, args=(db, str(tmp_path), 2000, batch_size, results)
    )
    process.start()
    try:
        outcome = results.get(timeout=60)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.join(30)
    assert process.exitcode == -signal.SIGKILL
    if batch_size > 2000:
        assert outcome["written"] == 0 and counts(db) == (0, 0)  # everything was still in memory
    assert len(waiting_files(tmp_path)) >= 1  # the dead process's journal, its lock free

    successor = InferenceLog(db, spool_dir=tmp_path, **FAST).start()
    wait_until(lambda: drained(successor), timeout_s=60)
    successor.close()
    assert counts(db) == (2000, 2000)
    assert {r for (r,) in query(db, "SELECT row_id::text FROM predictions")} == set(outcome["row_ids"])
    assert spool_files(tmp_path) == []
