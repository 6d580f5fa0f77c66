"""Every SQL example in docs/inference-db.md runs against the real schema (and finds the rows
it is about), so the analysts' page cannot drift from the migrations."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from devtools.postgres_local import LocalPostgres
from inferencedb.inference_log import InferenceLog
from tests.db.records import make_record

DOC = Path(__file__).resolve().parents[2] / "docs" / "inference-db.md"
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(scope="module")
def seeded_db(
    postgres: LocalPostgres, migrated_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database for all the examples (they only read, or roll back)."""
    postgres.start()
    db = postgres.create_database("docs_examples", template=migrated_template)
    now = datetime.now(UTC)
    records = []
    for i in range(40):
        for role, version in (("primary", "3"), ("shadow", "4")):
            records.append(
                make_record(
                    i,
                    request_id="req-2f9c1e" if i < 4 else f"req-{i}",
                    item_index=i % 4,
                    role=role,
                    version=version,
                    created_at=now - timedelta(minutes=i),
                )
            )
    with InferenceLog(db, spool_dir=tmp_path_factory.mktemp("spool")) as inference_log:
        inference_log.log_many(records)
    conn = psycopg2.connect(db)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO feedback (tenant, request_id, item_index, label) VALUES"
                " ('default', 'req-2f9c1e', 0, 'change_address'), ('default', 'req-2f9c1e', 1, 'oos')"
            )
    finally:
        conn.close()
    yield db
    conn = postgres.connect("postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE docs_examples WITH (FORCE)")
    finally:
        conn.close()


def test_the_doc_has_examples():
    assert len(SQL_BLOCKS) >= 10


@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=[b.strip().splitlines()[0][:40] for b in SQL_BLOCKS])
def test_doc_example_runs(seeded_db: str, sql: str):
    conn = psycopg2.connect(seeded_db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)  # in a transaction that is rolled back: examples that change things are fine
            rows = cur.fetchall() if cur.description else []
        if "FROM feedback f" in sql or "WHERE request_id = 'req-2f9c1e'" in sql or "s.role IN" in sql:
            assert rows, "this example should find the seeded rows"
    finally:
        conn.rollback()
        conn.close()
