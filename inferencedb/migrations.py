"""Schema migrations for the inference database: ordered SQL files in inferencedb/migrations/.

Every router process calls `apply_migrations(dsn)` at start. Several gunicorn workers (and
several machines) start at once, so the whole check-and-apply runs under a session-level
advisory lock held on a dedicated connection; each migration then runs in its own transaction on
a second connection, together with its row in `schema_migrations`. A migration either happened
completely and is recorded, or did not happen.

Files are immutable once applied: each is recorded with the sha256 of its bytes, and a file whose
checksum no longer matches stops the start with an error naming it (fix forward with a new file).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg2

from inferencedb import pg
from inferencedb.errors import InferenceDbError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# 'manyhead' as a 64-bit integer: one fixed key that every router process agrees on.
MIGRATION_LOCK_KEY = 7881702290596651364
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(InferenceDbError):
    """The migrations cannot be applied (bad file set, changed file, lock timeout)."""


class ChecksumMismatch(MigrationError):
    """An applied migration's file has changed since it was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # file name without .sql, e.g. 0001_predictions
    sql: str
    checksum: str  # sha256 hex of the file's bytes


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in `directory`, by version. Files not named NNNN_name.sql are an error
    (a typo would otherwise skip a migration silently), and so are two files with one version."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lowercase_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name} and {migrations[version].name}.sql share version {version}")
        data = path.read_bytes()
        migrations[version] = Migration(version, path.stem, data.decode("utf-8"), hashlib.sha256(data).hexdigest())
    return [migrations[v] for v in sorted(migrations)]


def applied_migrations(dsn: str, *, connect_timeout_s: float = 10.0) -> list[AppliedMigration]:
    """What `schema_migrations` records, by version (empty before the first apply)."""
    conn = psycopg2.connect(dsn, connect_timeout=max(1, int(connect_timeout_s)))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not cur.fetchone()[0]:
                return []
            cur.execute("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
            return [AppliedMigration(*row) for row in cur.fetchall()]
    finally:
        conn.close()


def apply_migrations(
    dsn: str,
    *,
    directory: Path = MIGRATIONS_DIR,
    lock_timeout_s: float = 120.0,
    connect_timeout_s: float = 10.0,
) -> list[str]:
    """Apply the pending migrations in order; returns the names applied by this call.

    Safe to call from many processes at once: they queue on the advisory lock (for at most
    `lock_timeout_s`), and the ones that get it after the first find nothing left to do.
    """
    migrations = load_migrations(directory)
    timeout = max(1, int(connect_timeout_s))
    # Keepalives, but no statement timeout: a migration may legitimately run long, and a router
    # applies them on a thread of its own that never holds up serving (api/core/runtime.py).
    with pg.driver_errors_translated():  # an unreachable server: DatabaseUnavailable
        lock_conn = psycopg2.connect(
            dsn, connect_timeout=timeout, application_name="manyheads-migrations-lock", **pg.KEEPALIVES
        )
    try:
        lock_conn.autocommit = True
        _take_lock(lock_conn, lock_timeout_s)
        conn = psycopg2.connect(dsn, connect_timeout=timeout, application_name="manyheads-migrations", **pg.KEEPALIVES)
        try:
            return _apply_locked(conn, migrations)
        finally:
            conn.close()
    finally:
        lock_conn.close()  # ends the session, which releases the advisory lock


def _take_lock(conn, lock_timeout_s: float) -> None:
    """pg_advisory_lock with a deadline: lock_timeout covers advisory locks too."""
    started = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("SET lock_timeout = %s", (f"{int(lock_timeout_s * 1000)}ms",))
        try:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        except psycopg2.errors.LockNotAvailable:
            raise MigrationError(
                f"another process held the migration lock for more than {lock_timeout_s:g} s"
            ) from None
        cur.execute("SET lock_timeout = 0")
    waited = time.monotonic() - started
    if waited > 1:
        log.info("waited %.1f s for the migration lock", waited)


def _apply_locked(conn, migrations: list[Migration]) -> list[str]:
    with conn, conn.cursor() as cur:
        cur.execute(_CREATE_TABLE)
        cur.execute("SELECT version, name, checksum FROM schema_migrations")
        recorded = {version: (name, checksum) for version, name, checksum in cur.fetchall()}
    known = {m.version for m in migrations}
    for migration in migrations:
        if migration.version in recorded and recorded[migration.version][1] != migration.checksum:
            name, checksum = recorded[migration.version]
            raise ChecksumMismatch(
                f"migration {migration.name} was applied as {name} with sha256 {checksum[:12]}…, "
                f"but the file now has {migration.checksum[:12]}…: applied migrations must not change, "
                "add a new migration instead"
            )
    newer = sorted(v for v in recorded if v not in known)
    if newer:  # a newer router already migrated (rolling deploy): this one can still run
        log.warning("database has migrations this code does not know: %s", [recorded[v][0] for v in newer])
    applied: list[str] = []
    for migration in migrations:
        if migration.version in recorded:
            continue
        started = time.monotonic()
        try:
            with conn, conn.cursor() as cur:  # one transaction: the schema change and its record
                cur.execute(migration.sql)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
        except psycopg2.Error as e:
            raise MigrationError(f"migration {migration.name} failed: {e}".strip()) from e
        log.info("applied migration %s in %.2f s", migration.name, time.monotonic() - started)
        applied.append(migration.name)
    return applied
