"""One process of a whole deployment elected for a periodic job, by a PostgreSQL advisory lock.

Every router worker of every task runs the same monitoring loop, but the drift reports need
computing once per deployment, not once per worker. Each candidate asks `Leadership.held()`
before a run: the first to take the session-level advisory lock `key` keeps it on a connection of
its own for as long as that connection lives, and the others are told no by
`pg_try_advisory_lock` (never waiting). When the leader exits, or its connection drops, the
server releases the lock and the next candidate to ask takes it over. The check costs one
`SELECT 1` on the kept connection.
"""

from __future__ import annotations

import logging

import psycopg2

from inferencedb import pg

log = logging.getLogger(__name__)

# Keys of the jobs elected this way (the migrations hold MIGRATION_LOCK_KEY while they run).
DRIFT_LOCK_KEY = 7881702290596651365
ROLLBACK_LOCK_KEY = 7881702290596651366  # the automatic rollback job (api/core/auto_rollback.py)


class Leadership:
    def __init__(self, dsn: str, key: int, *, name: str, timeout_s: float = 5.0):
        self._dsn = dsn
        self._key = key
        self._name = name
        self._timeout_s = timeout_s
        self._conn = None  # the session holding the lock, while this process leads

    def held(self) -> bool:
        """Whether this process leads now: keeps the lock it holds, or takes it if it is free.
        False when the database cannot be reached (nobody can then run the job anyway)."""
        conn = None
        try:
            if self._conn is not None:
                # A server that stops answering (not refusing) must not hold this thread: cut it.
                with pg.deadline(self._conn, self._timeout_s), self._conn.cursor() as cur:
                    cur.execute("SELECT 1")
                return True
            conn = pg.connect(
                self._dsn,
                application_name=f"manyheads-{self._name}-leader",
                statement_timeout_s=self._timeout_s,
                connect_timeout_s=min(3.0, self._timeout_s),
            )
            conn.autocommit = True
            with pg.deadline(conn, self._timeout_s), conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
                taken = bool(cur.fetchone()[0])
            if not taken:
                conn.close()
                return False
            self._conn = conn
            log.info("this process now runs the %s job for the deployment", self._name)
            return True
        except psycopg2.Error as exc:
            if self._conn is not None:
                log.warning("lost the %s lock with its connection (%s)", self._name, type(exc).__name__)
            if conn is not None:  # a new session that failed before it could lead
                conn.close()
            self.close()
            return False

    def close(self) -> None:
        """Give the lock up (closing the session releases it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            pg.cut(conn)  # a close must not wait for a server that stopped answering
            try:
                conn.close()
            except psycopg2.Error:
                pass
