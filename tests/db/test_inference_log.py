"""InferenceLog against a real PostgreSQL: every logged record ends up in the table exactly once,
through outages, restarts, full queues, crashed writers and shared spool folders."""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.postgres_local import LocalPostgres
from devtools.processes import free_port
from inferencedb.inference_log import InferenceLog
from inferencedb.prediction_record import record_to_row
from inferencedb.spool import REJECTED_PREFIX, SpoolWriter, spool_files
from tests.db import workers
from tests.db.helpers import query, wait_until
from tests.db.records import make_record

# Small intervals so outages are noticed and spool files replayed within a test's patience.
FAST = {"retry_backoff_s": 0.05, "max_backoff_s": 0.3, "replay_interval_s": 0.2, "flush_interval_s": 0.05}


def counts(dsn: str) -> tuple[int, int]:
    """(rows, distinct row_ids) in predictions: equal and as expected means exactly once."""
    return query(dsn, "SELECT count(*), count(DISTINCT row_id) FROM predictions")[0]


def dead_dsn() -> str:
    """A DSN where nothing listens: connection refused at once, like a stopped server."""
    return f"postgresql://manyheads@127.0.0.1:{free_port()}/manyheads"


def drained(inference_log: InferenceLog) -> bool:
    stats = inference_log.stats()
    return stats.queue_depth == 0 and stats.spool_files == 0 and stats.db_healthy


def write_spool_file(spool_dir: Path, rows: list[dict]) -> Path:
    """A spool file as a process that has since exited leaves it (closed, lock free)."""
    writer = SpoolWriter(spool_dir)
    writer.append(rows)
    return writer.rotate()


def test_record_defaults_and_row_conversion():
    a, b = make_record(1), make_record(1)
    assert a.row_id != b.row_id and isinstance(a.row_id, uuid.UUID)
    assert a.created_at.tzinfo is not None and a.created_at.utcoffset() == timedelta(0)
    assert (a.tenant, a.role, a.status) == ("default", "primary", "ok")
    row = record_to_row(
        make_record(
            1,
            input_text="nul\x00 and lone \ud800 surrogate",
            top_k=[{"label": "x", "probability": float("nan")}, ("y", 0.25)],
            probability=float("inf"),
        )
    )
    assert row["input_text"] == "nul\ufffd and lone \ufffd surrogate"
    assert row["top_k"] == [{"label": "x", "probability": None}, {"label": "y", "probability": 0.25}]
    assert row["probability"] is None
    json.dumps(row, allow_nan=False)  # a spool line can always be written


def test_5000_records_from_8_threads_arrive_exactly_once(db: str, tmp_path: Path):
    inference_log = InferenceLog(db, spool_dir=tmp_path, **FAST).start()
    per_thread = 625

    def produce(t: int):
        inference_log.log_many(make_record(t * per_thread + i, request_id=f"t{t}-{i}") for i in range(per_thread))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    inference_log.close()
    assert counts(db) == (5000, 5000)
    stats = inference_log.stats()
    assert (stats.written, stats.lost, stats.rejected, stats.queue_depth) == (5000, 0, 0, 0)


def test_a_row_reads_back_exactly_as_logged(db: str, tmp_path: Path):
    record = make_record(
        7,
        input_text="  Où est ma commande ?\n\t😀 ",
        tenant="acme",
        role="shadow",
        top_k=[("where_is_order", 0.875), ("oos", 0.125)],
        status="ok",
    )
    with InferenceLog(db, spool_dir=tmp_path, **FAST) as inference_log:
        inference_log.log(record)
    row = query(
        db,
        "SELECT row_id, created_at, request_id, item_index, tenant, model, version, role, input_text, label,"
        " probability, top_k, embed_ms, head_ms, total_ms, cache_hit, client_id, status, embedding_model"
        " FROM predictions",
    )
    assert row == [
        (
            str(record.row_id),
            record.created_at,
            record.request_id,
            record.item_index,
            "acme",
            "intent-en",
            "3",
            "shadow",
            "  Où est ma commande ?\n\t😀 ",
            record.label,
            pytest.approx(record.probability),
            [{"label": "where_is_order", "probability": 0.875}, {"label": "oos", "probability": 0.125}],
            2.5,
            pytest.approx(0.1),
            4.0,
            record.cache_hit,
            "tests",
            "ok",
            "minilm-l6-v2",
        )
    ]


@pytest.mark.parametrize("outage", ["stop", "kill"])
def test_postgres_going_away_during_a_burst_loses_and_duplicates_nothing(
    postgres: LocalPostgres, db: str, tmp_path: Path, outage: str
):
    """Stop (fast shutdown) or SIGKILL the server mid-burst, keep logging, restart on the same port."""
    inference_log = InferenceLog(db, spool_dir=tmp_path, **FAST).start()
    producers, per_producer = 4, 1500
    halfway = threading.Event()
    logged = [0] * producers

    def produce(p: int):
        for i in range(per_producer):
            inference_log.log(make_record(i, request_id=f"p{p}-{i}"))
            logged[p] += 1
            if sum(logged) >= producers * per_producer // 3:
                halfway.set()
            if i % 25 == 0:
                time.sleep(0.005)  # a steady stream, not one instant burst

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    assert halfway.wait(30)
    if outage == "stop":
        postgres.stop("fast")
    else:
        postgres.kill()
    time.sleep(0.5)  # records keep coming while the database is away
    assert not postgres.is_running()
    postgres.start()
    for t in threads:
        t.join(60)
    wait_until(lambda: drained(inference_log), timeout_s=60)
    inference_log.close()

    total = producers * per_producer
    assert counts(db) == (total, total)
    stats = inference_log.stats()
    assert stats.spooled > 0 and stats.replayed > 0 and stats.failed_batches > 0  # the outage was real
    assert stats.lost == 0 and stats.rejected == 0
    assert stats.written + stats.replayed >= total  # replay may resend rows that were committed


def test_spool_left_by_a_closed_process_is_replayed_once_by_the_next(db: str, tmp_path: Path):
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    process = ctx.Process(target=workers.log_while_database_is_down, args=(dead_dsn(), str(tmp_path), 1000, results))
    process.start()
    outcome = results.get(timeout=60)
    process.join(30)
    assert process.exitcode == 0
    assert (outcome["spooled"], outcome["written"]) == (1000, 0)
    files = spool_files(tmp_path)
    assert sum(len(f.read_bytes().splitlines()) for f in files) == 1000

    successor = InferenceLog(db, spool_dir=tmp_path, **FAST).start()
    wait_until(lambda: successor.stats().spool_files == 0)
    successor.close()
    assert counts(db) == (1000, 1000)
    assert {r for (r,) in query(db, "SELECT row_id::text FROM predictions")} == set(outcome["row_ids"])
    assert successor.stats().replayed == 1000

    again = InferenceLog(db, spool_dir=tmp_path, **FAST).start()  # nothing left to replay twice
    time.sleep(0.3)
    again.close()
    assert again.stats().replayed == 0 and counts(db) == (1000, 1000)


def test_two_processes_sharing_a_spool_folder_replay_each_file_once(db: str, tmp_path: Path):
    rows = [record_to_row(make_record(i, request_id=f"left-{i}")) for i in range(3000)]
    for k in range(12):
        write_spool_file(tmp_path, rows[k * 250 : (k + 1) * 250])
    # One more whose replayer died mid-way: claimed name, lock free, half of it already inserted.
    claimed = write_spool_file(tmp_path, rows[:100] + [record_to_row(make_record(9, request_id="extra"))])
    claimed.rename(claimed.with_name(claimed.name + ".replaying-999999999"))

    a = InferenceLog(db, spool_dir=tmp_path, name="worker-a", batch_size=50, **FAST)
    b = InferenceLog(db, spool_dir=tmp_path, name="worker-b", batch_size=50, **FAST)
    a.start(), b.start()
    for i in range(500):  # both also log live records meanwhile
        (a if i % 2 else b).log(make_record(i, request_id=f"live-{i}"))
    wait_until(lambda: drained(a) and drained(b))
    a.close(), b.close()

    assert counts(db) == (3000 + 1 + 500, 3000 + 1 + 500)
    # Every spooled line was sent by exactly one of them: no file was replayed twice.
    assert a.stats().replayed + b.stats().replayed == 3000 + 101
    assert a.stats().written + b.stats().written == 500


def test_a_full_queue_spools_instead_of_dropping(db: str, tmp_path: Path):
    inference_log = InferenceLog(db, spool_dir=tmp_path, queue_size=10, **FAST)
    inference_log.log_many(make_record(i) for i in range(1000))  # writer not started: the queue fills
    stats = inference_log.stats()
    assert (stats.queue_depth, stats.overflow_spooled, stats.spooled, stats.lost) == (10, 990, 990, 0)
    inference_log.start()
    wait_until(lambda: drained(inference_log))
    inference_log.close()
    assert counts(db) == (1000, 1000)
    # The 990 rows the queue could not take were only in the journal: its segment is replayed
    # whole, and the 10 rows the queue committed meanwhile are skipped by ON CONFLICT.
    assert inference_log.stats().replayed == 1000


def test_a_truncated_last_spool_line_is_skipped_with_a_warning(db: str, tmp_path: Path, caplog):
    rows = [record_to_row(make_record(i)) for i in range(100)]
    path = write_spool_file(tmp_path, rows)
    with path.open("ab") as f:
        f.write(json.dumps(record_to_row(make_record(100))).encode()[:57])  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="inferencedb.inference_log"):
        inference_log = InferenceLog(db, spool_dir=tmp_path, **FAST).start()
        wait_until(lambda: drained(inference_log))
        inference_log.close()
    assert counts(db) == (100, 100)
    stats = inference_log.stats()
    assert (stats.replayed, stats.skipped_lines, stats.rejected) == (100, 1, 0)
    assert not path.exists()
    assert any("truncated last line" in r.getMessage() for r in caplog.records)


def test_close_flushes_what_is_queued(db: str, tmp_path: Path):
    # A batch size and flush interval that would hold everything back for a minute.
    inference_log = InferenceLog(db, spool_dir=tmp_path, batch_size=100_000, flush_interval_s=60).start()
    inference_log.log_many(make_record(i) for i in range(3000))
    started = time.monotonic()
    inference_log.close(timeout_s=20)
    assert time.monotonic() - started < 10
    assert counts(db) == (3000, 3000)
    assert spool_files(tmp_path) == []


def test_an_idle_writer_sleeps_a_flush_interval_and_close_wakes_it(db: str, tmp_path: Path):
    # With nothing queued the writer blocks for the whole flush interval (no wake-ups every
    # few milliseconds: the idle router's CPU); close() must not wait for that interval to end.
    inference_log = InferenceLog(db, spool_dir=tmp_path, batch_size=1, flush_interval_s=60).start()
    inference_log.log(make_record(1))  # a full batch: written at once
    wait_until(lambda: counts(db) == (1, 1))
    time.sleep(0.2)  # the writer is back to waiting for a first row
    waits = []
    get = inference_log._queue.get
    inference_log._queue.get = lambda *a, **k: waits.append(k.get("timeout")) or get(*a, **k)
    time.sleep(0.5)
    assert len(waits) <= 1  # at most the wait it was in, ended once by its timeout
    started = time.monotonic()
    inference_log.close(timeout_s=20)
    assert time.monotonic() - started < 10  # woken, not after the 60 s interval
    assert inference_log.stats().queue_depth == 0


def test_close_while_the_database_is_down_spools_everything(tmp_path: Path):
    inference_log = InferenceLog(dead_dsn(), spool_dir=tmp_path, batch_size=100_000, flush_interval_s=60).start()
    inference_log.log_many(make_record(i) for i in range(2000))
    inference_log.close(timeout_s=20)
    inference_log.log(make_record(2000))  # after close: still not dropped
    assert sum(len(f.read_bytes().splitlines()) for f in spool_files(tmp_path)) == 2001
    assert inference_log.stats().lost == 0


def test_rows_postgres_refuses_are_kept_aside_and_do_not_block_their_batch(db: str, tmp_path: Path):
    records = [make_record(i) for i in range(200)]
    records[37] = make_record(37, item_index=2**40)  # integer out of range: refused on content
    with InferenceLog(db, spool_dir=tmp_path, batch_size=500, **FAST) as inference_log:
        inference_log.log_many(records)
        inference_log.log("not a record")  # type: ignore[arg-type]  # a caller's bug: kept, never raised
    assert counts(db) == (199, 199)
    stats = inference_log.stats()
    assert (stats.written, stats.rejected, stats.lost) == (199, 2, 0)
    rejected = [json.loads(line) for f in tmp_path.glob(f"{REJECTED_PREFIX}-*") for line in f.read_text().splitlines()]
    assert len(rejected) == 2
    assert any(r.get("row", {}).get("row_id") == str(records[37].row_id) for r in rejected)


def test_no_database_and_no_disk_is_an_error_with_the_count(tmp_path: Path, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with caplog.at_level(logging.ERROR, logger="inferencedb.inference_log"):
        inference_log = InferenceLog(dead_dsn(), spool_dir=not_a_folder, **FAST).start()
        inference_log.log_many(make_record(i) for i in range(10))
        inference_log.close()
    assert inference_log.stats().lost == 10
    lost = [r for r in caplog.records if r.levelno == logging.ERROR and "LOST" in r.getMessage()]
    assert sum(int(r.getMessage().split("LOST ")[1].split()[0]) for r in lost) == 10


def test_observer_and_stats_count_what_happened(db: str, tmp_path: Path):
    events: dict[str, int] = {}

    def observe(event: str, n: int) -> None:
        events[event] = events.get(event, 0) + n

    with InferenceLog(db, spool_dir=tmp_path, observer=observe, **FAST) as inference_log:
        inference_log.log_many(make_record(i) for i in range(300))
    assert events == {"written": 300}
    stats = inference_log.stats()
    assert (stats.written, stats.spooled, stats.spool_files, stats.db_healthy, stats.last_error) == (
        300,
        0,
        0,
        True,
        None,
    )


def test_partitions_are_created_at_start(db: str, tmp_path: Path):
    far = "predictions_" + (datetime.now(UTC) + timedelta(days=12)).strftime("%Y%m%d")
    assert query(db, "SELECT to_regclass(%s)", (far,)) == [(None,)]
    with InferenceLog(db, spool_dir=tmp_path, partitions_ahead_days=12, **FAST) as inference_log:
        wait_until(lambda: query(db, "SELECT to_regclass(%s) IS NOT NULL", (far,)) == [(True,)])
        inference_log.log(make_record(1, created_at=datetime.now(UTC) + timedelta(days=12)))
    assert query(db, "SELECT tableoid::regclass::text FROM predictions") == [(far,)]


def test_a_forked_child_that_did_not_start_its_own_log_spools(db: str, tmp_path: Path):
    """gunicorn forks workers: a log started in the master has no writer thread in the child."""
    import os

    inference_log = InferenceLog(db, spool_dir=tmp_path, **FAST).start()
    pid = os.fork()
    if pid == 0:  # child: log, then leave without cleanup (as a worker killed at shutdown would)
        try:
            inference_log.log_many(make_record(i, request_id="from-child") for i in range(50))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    inference_log.log_many(make_record(i, request_id="from-parent") for i in range(50))
    wait_until(lambda: drained(inference_log))
    inference_log.close()
    assert query(db, "SELECT request_id, count(*) FROM predictions GROUP BY 1 ORDER BY 1") == [
        ("from-child", 50),
        ("from-parent", 50),
    ]


def test_the_queue_is_bounded_in_bytes_by_maximal_texts(db: str, tmp_path: Path):
    """10,000-character texts: the queue holds at most queue_max_bytes of rows in memory; the rest
    waits in the journal and still arrives exactly once."""
    import tracemalloc

    budget = 1 << 20
    inference_log = InferenceLog(db, spool_dir=tmp_path, queue_max_bytes=budget, **FAST)
    records = [make_record(i, input_text=f"{i:05d}" + "é" * 9_995) for i in range(400)]  # ~20 KB per line
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    inference_log.log_many(records)  # writer not started: the queue fills up to its byte budget
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    stats = inference_log.stats()
    assert 0 < stats.queue_bytes <= budget and 0 < stats.queue_depth < 100
    assert stats.overflow_spooled == 400 - stats.queue_depth
    assert grown < 2 * budget  # what the queue keeps alive (row dicts and their texts), measured
    inference_log.start()
    wait_until(lambda: drained(inference_log))
    inference_log.close()
    assert counts(db) == (400, 400)


# Texts that mean something to COPY's text format (escapes, NULL, end of data) or to JSON.
AWKWARD_TEXTS = [
    "back\\slash and \\N and \\. alone",
    "\\.",
    "\\N",
    "tab\there, newline\nthere, carriage return\rthere, \r\n both",
    "quotes \" and ' and a trailing backslash \\",
    "Où est ma commande ? 😀 \u2028 \x7f",
    "",
]


def test_awkward_texts_read_back_exactly_through_the_live_queue(db: str, tmp_path: Path):
    """The live queue's rows go by COPY in text format: every character the format or JSON gives
    a meaning comes back as it was sent, in the text and in top_k's labels."""
    records = [
        make_record(i, input_text=text, model_input=text, label=text, top_k=[(text, 0.5), ("other", 0.25)])
        for i, text in enumerate(AWKWARD_TEXTS)
    ]
    records.append(make_record(99, label=None, probability=None, top_k=None, cache_hit=None, client_id=None))
    with InferenceLog(db, spool_dir=tmp_path, **FAST) as inference_log:
        inference_log.log_many(records)
    rows = dict(
        (row_id, rest)
        for row_id, *rest in query(
            db,
            "SELECT row_id, input_text, model_input, label, top_k, probability, cache_hit, client_id FROM predictions",
        )
    )
    for record, text in zip(records, AWKWARD_TEXTS, strict=False):
        assert rows[str(record.row_id)][:4] == [
            text,
            text,
            text,
            [{"label": text, "probability": 0.5}, {"label": "other", "probability": 0.25}],
        ]
    assert rows[str(records[-1].row_id)][2:] == [None, None, None, None, None]
    assert inference_log.stats().written == len(records)


def test_a_live_batch_meeting_rows_already_committed_writes_each_once(db: str, tmp_path: Path):
    """A batch whose commit went through but whose acknowledgement was lost is sent again: COPY,
    which cannot skip rows already there, gives way to the INSERT that does; nothing is
    rejected nor doubled."""
    records = [make_record(i) for i in range(50)]
    with InferenceLog(db, spool_dir=tmp_path / "first", **FAST) as first:
        first.log_many(records[:20])
    assert counts(db) == (20, 20)
    with InferenceLog(db, spool_dir=tmp_path / "again", batch_size=500, **FAST) as again:
        again.log_many(records)  # one batch: 20 rows already committed, 30 new
    assert counts(db) == (50, 50)
    stats = again.stats()
    assert (stats.rejected, stats.lost, stats.spooled) == (0, 0, 0)
    assert not list((tmp_path / "again").glob(f"{REJECTED_PREFIX}-*"))
