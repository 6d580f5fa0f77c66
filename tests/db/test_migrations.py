"""Migrations and the schema they build: partitions, the default partition, feedback, views."""

from __future__ import annotations

import multiprocessing
import shutil
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest

from inferencedb.migrations import (
    MIGRATIONS_DIR,
    ChecksumMismatch,
    MigrationError,
    applied_migrations,
    apply_migrations,
    load_migrations,
)
from tests.db import workers
from tests.db.helpers import query

ALL = [m.name for m in load_migrations()]


def _partitions(dsn: str) -> list[str]:
    rows = query(
        dsn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'predictions'::regclass ORDER BY 1",
    )
    return [name for (name,) in rows]


def _day_name(days_from_today: int) -> str:
    return "predictions_" + (datetime.now(UTC) + timedelta(days=days_from_today)).strftime("%Y%m%d")


def _insert(dsn: str, created_at: datetime, row_id: uuid.UUID | None = None) -> int:
    """Insert one row the way the writer does; returns how many rows were inserted (0 or 1)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO predictions (row_id, created_at, request_id, model, version, label, probability) "
                "VALUES (%s, %s, 'r', 'm', '1', 'a', 0.9) ON CONFLICT DO NOTHING",
                (str(row_id or uuid.uuid4()), created_at),
            )
            return cur.rowcount
    finally:
        conn.close()


def test_migration_files_are_numbered_and_named():
    assert ALL[:3] == ["0001_predictions", "0002_feedback", "0003_analyst_views"]
    assert [m.version for m in load_migrations()] == list(range(1, len(ALL) + 1))


def test_applies_every_migration_once_then_nothing(empty_db: str):
    assert apply_migrations(empty_db) == ALL
    assert apply_migrations(empty_db) == []
    recorded = applied_migrations(empty_db)
    assert [(a.version, a.name, a.checksum) for a in recorded] == [
        (m.version, m.name, m.checksum) for m in load_migrations()
    ]
    assert all(a.applied_at.tzinfo is not None for a in recorded)


def test_concurrent_processes_apply_each_migration_exactly_once(empty_db: str):
    ctx = multiprocessing.get_context("spawn")
    processes = 6
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers_ = [
        ctx.Process(target=workers.apply_migrations_together, args=(empty_db, barrier, results))
        for _ in range(processes)
    ]
    for p in workers_:
        p.start()
    applied = [results.get(timeout=60) for _ in range(processes)]
    for p in workers_:
        p.join(30)
        assert p.exitcode == 0
    flat = [name for names in applied for name in names]
    assert sorted(flat) == sorted(ALL)  # every migration applied, by exactly one process
    assert sum(1 for names in applied if names) >= 1
    assert query(empty_db, "SELECT count(*) FROM schema_migrations") == [(len(ALL),)]


def test_a_changed_applied_migration_is_an_error_naming_it(empty_db: str, tmp_path: Path):
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    apply_migrations(empty_db, directory=directory)
    changed = directory / "0002_feedback.sql"
    changed.write_text(changed.read_text() + "\n-- edited after the fact\n")
    with pytest.raises(ChecksumMismatch, match="0002_feedback"):
        apply_migrations(empty_db, directory=directory)


def test_a_new_migration_file_is_applied_alone(empty_db: str, tmp_path: Path):
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    apply_migrations(empty_db, directory=directory)
    (directory / "0999_extra.sql").write_text("CREATE TABLE extra (x int);")
    assert apply_migrations(empty_db, directory=directory) == ["0999_extra"]


def test_badly_named_or_failing_migration_files_are_errors(empty_db: str, tmp_path: Path):
    (tmp_path / "1_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="1_oops.sql"):
        load_migrations(tmp_path)
    (tmp_path / "1_oops.sql").unlink()
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok (x int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE broken (x nosuchtype);")
    with pytest.raises(MigrationError, match="0002_broken"):
        apply_migrations(empty_db, directory=tmp_path)
    # The good one stays applied; the broken one left nothing behind (its own transaction).
    assert [a.name for a in applied_migrations(empty_db)] == ["0001_ok"]
    assert query(empty_db, "SELECT to_regclass('broken') IS NULL") == [(True,)]


def test_daily_partitions_exist_from_yesterday_to_a_week_ahead(db: str):
    names = _partitions(db)
    assert "predictions_default" in names
    for day in range(-1, 8):
        assert _day_name(day) in names
    # Every index on the parent exists on the partitions (analysts' queries stay indexed).
    indexes = query(db, "SELECT count(*) FROM pg_indexes WHERE tablename = %s", (_day_name(0),))[0][0]
    assert indexes == 6  # primary key + 4 b-trees + the BRIN on time (0009)


def test_ensure_partitions_is_idempotent_and_safe_concurrently(db: str):
    before = set(_partitions(db))
    results: list[int] = []
    errors: list[BaseException] = []

    def call():
        try:
            results.append(query(db, "SELECT ensure_prediction_partitions(3, 30)")[0][0])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    created = set(_partitions(db)) - before
    assert sum(results) == len(created) == 2 + 23  # days -3, -2 and +8..+30
    assert query(db, "SELECT ensure_prediction_partitions(3, 30)") == [(0,)]


def test_rows_far_in_the_past_or_future_land_in_the_default_partition(db: str):
    past, future = datetime(1999, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=4000)
    row_id = uuid.uuid4()
    assert _insert(db, past, row_id) == 1
    assert _insert(db, future) == 1
    assert _insert(db, past, row_id) == 0  # replayed: ON CONFLICT DO NOTHING, also in the default partition
    rows = query(db, "SELECT tableoid::regclass::text, count(*) FROM predictions GROUP BY 1")
    assert rows == [("predictions_default", 2)]


def test_creating_a_partition_moves_its_rows_out_of_the_default_partition(db: str):
    when = datetime.now(UTC) + timedelta(days=20)
    _insert(db, when)
    assert query(db, "SELECT tableoid::regclass::text FROM predictions") == [("predictions_default",)]
    assert query(db, "SELECT ensure_prediction_partitions(0, 25)")[0][0] == 25 - 7
    assert query(db, "SELECT tableoid::regclass::text FROM predictions") == [(_day_name(20),)]
    assert query(db, "SELECT count(*) FROM pg_indexes WHERE tablename = %s", (_day_name(20),)) == [(6,)]


def test_old_partitions_can_be_dropped(db: str):
    query(db, "SELECT ensure_prediction_partitions(10, 0)")
    _insert(db, datetime.now(UTC) - timedelta(days=9))
    dropped = [name for (name,) in query(db, "SELECT drop_prediction_partitions(3)")]
    assert dropped == sorted(_day_name(-d) for d in range(4, 11))
    assert query(db, "SELECT count(*) FROM predictions") == [(0,)]
    assert _day_name(-3) in _partitions(db)
    with pytest.raises(psycopg2.errors.RaiseException):
        query(db, "SELECT drop_prediction_partitions(0)")


def test_feedback_is_one_row_per_item(db: str):
    insert = "INSERT INTO feedback (tenant, request_id, item_index, model, label) VALUES ('t', 'r1', 0, 'm', 'a')"
    query(db, insert)
    with pytest.raises(psycopg2.errors.UniqueViolation):
        query(db, insert)
    query(db, insert + " ON CONFLICT (tenant, request_id, item_index) DO UPDATE SET label = 'b'")
    assert query(db, "SELECT label FROM feedback") == [("b",)]


def _seed_for_views(dsn: str) -> None:
    today = datetime.now(UTC).replace(hour=12)
    rows = [
        # version, role, label, probability, status
        # (probabilities exact in binary, so means and buckets are exact too)
        ("1", "primary", "a", 0.9375, "ok"),
        ("1", "primary", "a", 1.0, "ok"),
        ("1", "primary", "b", 0.25, "ok"),
        ("1", "primary", "oos", 0.625, "ok"),
        ("1", "primary", None, None, "overloaded"),
        ("1", "primary", None, None, "timeout"),
        ("2", "shadow", "a", 0.5625, "ok"),
    ]
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for i, (version, role, label, probability, status) in enumerate(rows):
                cur.execute(
                    "INSERT INTO predictions (row_id, created_at, request_id, item_index, tenant, model, version, role,"
                    " input_text, label, probability, status) VALUES (%s, %s, 'req', %s, 'acme', 'intent', %s, %s,"
                    " 'some text', %s, %s, %s)",
                    (str(uuid.uuid4()), today, i, version, role, label, probability, status),
                )
    finally:
        conn.close()


def test_analyst_views(db: str):
    _seed_for_views(db)
    volume = query(
        db,
        "SELECT version, role, predictions, errors, round(mean_probability::numeric, 3) "
        "FROM prediction_volume_daily WHERE day = (now() AT TIME ZONE 'UTC')::date ORDER BY version",
    )
    assert [tuple(map(str, r)) for r in volume] == [
        ("1", "primary", "6", "2", "0.703"),
        ("2", "shadow", "1", "0", "0.563"),
    ]

    labels = query(
        db,
        "SELECT label, predictions, round(share::numeric, 2) FROM label_distribution_daily "
        "WHERE version = '1' ORDER BY label",
    )
    assert [tuple(map(str, r)) for r in labels] == [("a", "2", "0.50"), ("b", "1", "0.25"), ("oos", "1", "0.25")]

    histogram = query(db, "SELECT bucket::text, predictions FROM confidence_histogram WHERE version = '1' ORDER BY 1")
    assert histogram == [("0.2", 1), ("0.6", 1), ("0.9", 2)]  # 1.0 belongs to the top bucket

    low = query(db, "SELECT item_index, reason FROM low_confidence_predictions ORDER BY item_index")
    assert low == [(2, "probability_below_0.5"), (3, "out_of_scope")]  # error rows are outages, not doubt

    for view in (
        "prediction_volume_daily",
        "label_distribution_daily",
        "confidence_histogram",
        "low_confidence_predictions",
    ):
        comment = query(db, "SELECT obj_description(%s::regclass, 'pg_class')", (view,))[0][0]
        assert comment and len(comment) > 40, view


def _as_role(dsn: str, role: str, statement: str, params: tuple = ()) -> str | None:
    """Run `statement` logged in as `role` (trust auth); None when it succeeds, else the error class."""
    conn = psycopg2.connect(dsn, user=role)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
        return None
    except psycopg2.Error as exc:
        return type(exc).__name__
    finally:
        conn.close()


def test_service_roles_may_do_their_work_and_nothing_more(db):
    """Migration 0008: the router writes rows and partitions, training only reads, neither may
    change the schema or delete predictions, and training never sees the key hashes."""
    tomorrow = (datetime.now(UTC) + timedelta(days=9)).isoformat()
    insert = (
        "INSERT INTO predictions (row_id, created_at, request_id, model, version, label, probability) "
        "VALUES (%s, %s, 'r', 'm', '1', 'a', 0.9)"
    )
    router = "manyheads_router"
    assert _as_role(db, router, "SELECT ensure_prediction_partitions(1, 10)") is None  # as the owner
    assert _as_role(db, router, insert, (str(uuid.uuid4()), tomorrow)) is None
    assert _as_role(db, router, "SELECT count(*) FROM answered_predictions") is None
    assert _as_role(db, router, "SELECT key_id FROM api_keys") is None
    counts = "INSERT INTO answer_counts VALUES (now(), 't', 'm', '1', 'primary', 'a', 9, 1)"
    assert _as_role(db, router, counts) is None and _as_role(db, router, "SELECT n FROM answer_counts") is None
    assert _as_role(db, router, "DELETE FROM predictions") == "InsufficientPrivilege"
    assert _as_role(db, router, "SELECT drop_prediction_partitions(0)") == "InsufficientPrivilege"
    assert _as_role(db, router, "CREATE TABLE intruder (x int)") == "InsufficientPrivilege"
    training = "manyheads_training"
    assert _as_role(db, training, "SELECT count(*) FROM predictions JOIN feedback USING (request_id)") is None
    assert _as_role(db, training, insert, (str(uuid.uuid4()), tomorrow)) == "InsufficientPrivilege"
    assert _as_role(db, training, "SELECT secret_hash FROM api_keys") == "InsufficientPrivilege"
    assert _as_role(db, training, "SELECT n FROM answer_counts") is None  # a later table: default privileges


def test_the_drift_job_finds_the_models_with_traffic_in_its_window(db: str):
    from inferencedb.database import Database
    from inferencedb.monitoring_report import drift_inputs

    now = datetime.now(UTC)
    conn = psycopg2.connect(db)
    try:
        with conn, conn.cursor() as cur:
            for tenant, model, age in (("acme", "fresh", 10), ("acme", "fresh", 20), ("globex", "old", 120)):
                cur.execute(
                    "INSERT INTO predictions (row_id, created_at, request_id, tenant, model, version, label, probability) "
                    "VALUES (%s, %s, 'r', %s, %s, '1', 'a', 0.9)",
                    (str(uuid.uuid4()), now - timedelta(minutes=age), tenant, model),
                )
            cur.execute("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'predictions%%time_brin'")
            assert cur.fetchone()[0] >= 1
    finally:
        conn.close()
    database = Database(db)
    try:
        observed = drift_inputs(database, now - timedelta(hours=1), now)
        assert set(observed) == {("acme", "fresh")}
        (group,) = observed["acme", "fresh"].groups.values()
        assert group.labels == {"a": 2} and sum(group.confidence) == 2
    finally:
        database.close()
