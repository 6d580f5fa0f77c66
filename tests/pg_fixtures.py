"""A real PostgreSQL for the test suite (no mocks of the database), shared by every test package.

The `postgres` fixture starts one server per session, in a folder made by `tempfile.mkdtemp()`:
mode 700 and owned by us, like the `mktemp -d` clone CI runs in, so when the suite runs as root
the server user cannot read it and the relocation in devtools/postgres_local.py is exercised on every
run. Each test gets its own database (`db`: migrated, cloned from a template; `empty_db`: bare),
so tests neither see nor clean up each other's rows.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from devtools.postgres_local import LocalPostgres
from inferencedb.migrations import apply_migrations
from tests.db.helpers import TEST_SERVER_SETTINGS

TEMPLATE_DATABASE = "manyheads_migrated_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """The session's server: `.dsn`, `.stop()`, `.start()` (same port), `.kill()`, `.dsn_for(db)`."""
    repo_var = Path(tempfile.mkdtemp(prefix="manyheads-test-var-"))
    server = LocalPostgres(repo_var / "pg", server_settings=TEST_SERVER_SETTINGS)
    server.start()
    try:
        yield server
    finally:
        server.destroy()
        shutil.rmtree(repo_var, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_template(postgres: LocalPostgres) -> str:
    """A database with every migration applied, cloned for each test (cloning beats migrating)."""
    dsn = postgres.create_database(TEMPLATE_DATABASE)
    apply_migrations(dsn)
    return TEMPLATE_DATABASE


def _drop_database(postgres: LocalPostgres, name: str) -> None:
    if not postgres.is_running():
        postgres.start()
    conn = postgres.connect("postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@pytest.fixture
def empty_db(postgres: LocalPostgres) -> Iterator[str]:
    """DSN of a new database with nothing in it."""
    postgres.start()  # a no-op when running; heals the session after a test that stopped it
    name = f"test_{secrets.token_hex(6)}"
    dsn = postgres.create_database(name)
    yield dsn
    _drop_database(postgres, name)


@pytest.fixture
def db(postgres: LocalPostgres, migrated_template: str) -> Iterator[str]:
    """DSN of a new database with every migration applied."""
    postgres.start()
    name = f"test_{secrets.token_hex(6)}"
    dsn = postgres.create_database(name, template=migrated_template)
    # The template's daily partitions are those of the day it was migrated: a session that runs
    # past midnight UTC would see yesterday's set. Bring them to today, as every router does at
    # start and hourly (found by a CI run that crossed midnight).
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT ensure_prediction_partitions()")
    finally:
        conn.close()
    yield dsn
    _drop_database(postgres, name)
