"""Code that tests run in other processes (spawned: importable by name, no inherited state)."""

from __future__ import annotations

from pathlib import Path


def apply_migrations_together(dsn: str, barrier, results) -> None:
    """Wait for every sibling process, then apply the migrations; report what this one applied."""
    from api.migrations import apply_migrations

    barrier.wait(60)
    results.put(apply_migrations(dsn))


def log_while_database_is_down(dsn: str, spool_dir: str, count: int, results) -> None:
    """A router process whose database is unreachable: log `count` records, close, exit."""
    from api.inference_log import InferenceLog
    from tests.db.records import make_record

    inference_log = InferenceLog(dsn, spool_dir=Path(spool_dir), retry_backoff_s=0.05, max_backoff_s=0.2).start()
    records = [make_record(i, request_id=f"dead-{i}") for i in range(count)]
    inference_log.log_many(records)
    inference_log.close(timeout_s=30)
    stats = inference_log.stats()
    results.put({"row_ids": [str(r.row_id) for r in records], "spooled": stats.spooled, "written": stats.written})
