"""Short queries from request threads (feedback, reports) and monitoring: a small pool per
worker, created on first use (after fork). Every call is bounded by `timeout_s` even when the
server never answers (inferencedb/pg.py), and any database failure becomes DatabaseUnavailable (the router answers 503
with Retry-After): callers never see a driver exception and never wait longer than that."""

from __future__ import annotations

import io

import psycopg2
import psycopg2.extras
import psycopg2.pool

from inferencedb import pg
from inferencedb.errors import DatabaseUnavailable


class Database:
    def __init__(self, dsn: str, *, max_connections: int = 8, timeout_s: float = 5.0):
        self._dsn = dsn
        self._max_connections = max_connections
        self.timeout_s = timeout_s
        self._options = pg.connection_options(
            application_name="manyheads-api", statement_timeout_s=timeout_s, connect_timeout_s=min(3.0, timeout_s)
        )
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None

    def _connection(self):
        try:
            if self._pool is None:
                # minconn is also how many idle connections the pool keeps: with 0 it would
                # close every connection after one query and connect again for the next.
                self._pool = psycopg2.pool.ThreadedConnectionPool(1, self._max_connections, self._dsn, **self._options)
            return self._pool.getconn()
        except psycopg2.pool.PoolError:
            raise DatabaseUnavailable("too many database requests at once; retry") from None
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(f"the inference database is unavailable ({type(exc).__name__})") from None

    def run(self, sql: str, params: tuple | dict = (), *, fetch: str = "all"):
        """Execute one statement in its own transaction; fetch "all", "one" or "none"."""

        def execute(cur):
            cur.execute(sql, params)
            if fetch == "all":
                return cur.fetchall()
            return cur.fetchone() if fetch == "one" else None

        return self._in_transaction(execute)

    def insert_many(self, sql: str, rows: list[tuple], *, template: str | None = None) -> None:
        """Insert `rows` with one statement (`sql` holds one `VALUES %s`) in its own transaction;
        `template`: one row's placeholders, e.g. with casts (execute_values' template)."""
        if rows:
            self._in_transaction(
                lambda cur: psycopg2.extras.execute_values(cur, sql, rows, template=template, page_size=len(rows))
            )

    def copy_binary(self, sql: str, data: bytes) -> None:
        """Run `sql`, a `COPY ... FROM STDIN WITH (FORMAT binary)`, on `data` in its own
        transaction: for rows whose text form costs more to write and parse than the rows are
        worth (arrays of floats)."""
        self._in_transaction(lambda cur: cur.copy_expert(sql, io.BytesIO(data)))

    def _in_transaction(self, work):
        conn = self._connection()
        broken = False
        try:
            with pg.deadline(conn, self.timeout_s), conn, conn.cursor() as cur:
                return work(cur)
        except psycopg2.Error as exc:
            broken = True  # cut by the deadline, or in an unknown state: never handed out again
            raise DatabaseUnavailable(f"the inference database is unavailable ({type(exc).__name__})") from None
        finally:
            self._pool.putconn(conn, close=broken)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.closeall()
