"""Short queries from request threads (feedback, reports): a small pool per worker, created on
first use (after fork), with connect and statement timeouts. Any database failure becomes
DatabaseUnavailable (HTTP 503 with Retry-After): callers never see a driver exception."""

from __future__ import annotations

import psycopg2
import psycopg2.pool

from api.errors import ApiError


class DatabaseUnavailable(ApiError):
    status, code, retry_after_s = 503, "database_unavailable", 1


class Database:
    def __init__(self, dsn: str, *, max_connections: int = 8, statement_timeout_ms: int = 5000):
        self._dsn = dsn
        self._max_connections = max_connections
        self._options = f"-c statement_timeout={statement_timeout_ms}"
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None

    def _connection(self):
        try:
            if self._pool is None:
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    0, self._max_connections, self._dsn, connect_timeout=3, options=self._options
                )
            return self._pool.getconn()
        except psycopg2.pool.PoolError:
            raise DatabaseUnavailable("too many database requests at once; retry") from None
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(f"the inference database is unavailable ({type(exc).__name__})") from None

    def run(self, sql: str, params: tuple | dict = (), *, fetch: str = "all"):
        """Execute one statement in its own transaction; fetch "all", "one" or "none"."""
        conn = self._connection()
        broken = False
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                if fetch == "all":
                    return cur.fetchall()
                return cur.fetchone() if fetch == "one" else None
        except psycopg2.Error as exc:
            broken = conn.closed != 0
            raise DatabaseUnavailable(f"the inference database is unavailable ({type(exc).__name__})") from None
        finally:
            self._pool.putconn(conn, close=broken)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.closeall()
