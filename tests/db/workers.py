"""Code that tests run in other processes (spawned: importable by name, no inherited state)."""

from __future__ import annotations

from pathlib import Path


def apply_migrations_together(dsn: str, barrier, results) -> None:
    """Wait for every sibling process, then apply the migrations; report what this one applied."""
    from inferencedb.migrations import apply_migrations

    barrier.wait(60)
    results.put(apply_migrations(dsn))


def log_while_database_is_down(dsn: str, spool_dir: str, count: int, results) -> None:
    """A router process whose database is unreachable: log `count` records, close, exit."""
    from inferencedb.inference_log import InferenceLog
    from tests.db.records import make_record

    inference_log = InferenceLog(dsn, spool_dir=Path(spool_dir), retry_backoff_s=0.05, max_backoff_s=0.2).start()
    records = [make_record(i, request_id=f"dead-{i}") for i in range(count)]
    inference_log.log_many(records)
    inference_log.close(timeout_s=30)
    stats = inference_log.stats()
    results.put({"row_ids": [str(r.row_id) for r in records], "spooled": stats.spooled, "written": stats.written})


def log_then_wait_to_be_killed(dsn: str, spool_dir: str, count: int, batch_size: int, results) -> None:
    """A router process that logs `count` records, reports their ids and how many its writer
    committed (none with a batch larger than `count`), then waits for the SIGKILL the test sends."""
    import time

    from inferencedb.inference_log import InferenceLog
    from tests.db.records import make_record

    inference_log = InferenceLog(dsn, spool_dir=Path(spool_dir), batch_size=batch_size, flush_interval_s=60).start()
    records = [make_record(i, request_id=f"killed-{i}") for i in range(count)]
    inference_log.log_many(records)
    time.sleep(0.3)  # lets a writer with small batches commit them
    results.put({"row_ids": [str(r.row_id) for r in records], "written": inference_log.stats().written})
    time.sleep(600)
