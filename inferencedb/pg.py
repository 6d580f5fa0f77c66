"""PostgreSQL connections that cannot hang the router: every connection the router opens comes
from `connect`, and every wait on one is bounded by `deadline`.

A database that accepts connections but never answers (a failover in progress, a network
partition, a stuck proxy) is the hard case: no error ever arrives. Three layers bound it:

- `connect_timeout` bounds the whole connection start-up, authentication included;
- TCP keepalives and `tcp_user_timeout` make the kernel drop a connection whose peer has gone
  silent (unacknowledged data, or no answer to keepalive probes), and `statement_timeout` makes
  a live but slow server give up on a statement;
- `deadline(conn, seconds)` covers what those cannot see, such as a proxy that still acknowledges
  packets but forwards nothing: a timer shuts the connection's socket down, the blocked call fails
  at once with OperationalError, and the caller treats it as the database being unavailable.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
from collections.abc import Iterator

import psycopg2

from inferencedb.errors import DatabaseUnavailable, InferenceDbError

KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}


def connection_options(*, application_name: str, statement_timeout_s: float, connect_timeout_s: float = 3.0) -> dict:
    """psycopg2.connect keyword arguments (also for a pool) with every timeout set."""
    timeout_ms = max(1, int(statement_timeout_s * 1000))
    return {
        "connect_timeout": max(1, math.ceil(connect_timeout_s)),
        "application_name": application_name,
        "options": f"-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms * 2}",
        "tcp_user_timeout": timeout_ms,
        **KEEPALIVES,
    }


def connect(dsn: str, *, application_name: str, statement_timeout_s: float, connect_timeout_s: float = 3.0):
    return psycopg2.connect(
        dsn,
        **connection_options(
            application_name=application_name,
            statement_timeout_s=statement_timeout_s,
            connect_timeout_s=connect_timeout_s,
        ),
    )


@contextlib.contextmanager
def deadline(conn, seconds: float) -> Iterator[None]:
    """Abort whatever `conn` waits for once `seconds` have passed (see the module docstring)."""
    timer = threading.Timer(seconds, cut, args=(conn,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def cut(conn) -> None:
    """Shut the connection's socket down, so that whatever waits on it fails at once."""
    with contextlib.suppress(Exception):  # already closed, or closing: nothing left to cut
        if conn.closed:
            return
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)  # acts on the connection, not only on our duplicate
        finally:
            sock.close()


@contextlib.contextmanager
def driver_errors_translated() -> Iterator[None]:
    """Turn the driver's exceptions into this package's: a failure to reach the server becomes
    DatabaseUnavailable, any other (a constraint, a bad statement) InferenceDbError, each with
    the server's one-line message. For the administration functions the CLIs call."""
    try:
        yield
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(str(exc).strip() or type(exc).__name__) from None
    except psycopg2.Error as exc:
        raise InferenceDbError(str(exc).strip() or type(exc).__name__) from None
