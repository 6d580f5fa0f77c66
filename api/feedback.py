"""Feedback: the correct label for a prediction, stored in the `feedback` table.

    POST /v1/predictions/<request_id>/feedback   {"label": "...", "item_index": 0}

The prediction must exist (the answered row of that request and item: role primary, candidate
or fallback) and the label must be one the answering version knows. A prediction's row reaches
PostgreSQL a fraction of a second after the answer (api/inference_log.py), so the lookup waits
briefly for it before saying 404. Feedback is upserted: the last correction wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg2
import psycopg2.pool

from api.errors import ApiError, InvalidRequest, NotFound

FIND = """
SELECT model, version FROM predictions
WHERE tenant = %s AND request_id = %s AND item_index = %s
  AND role IN ('primary', 'candidate', 'fallback') AND status = 'ok'
ORDER BY created_at DESC LIMIT 1
"""
UPSERT = """
INSERT INTO feedback (tenant, request_id, item_index, model, label, client_id)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant, request_id, item_index)
DO UPDATE SET label = EXCLUDED.label, client_id = EXCLUDED.client_id, created_at = now()
"""


class FeedbackUnavailable(ApiError):
    status, code, retry_after_s = 503, "feedback_unavailable", 1


@dataclass(frozen=True)
class FeedbackRequest:
    label: str
    item_index: int


def parse_feedback(body: object) -> FeedbackRequest:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {type(body).__name__}")
    extra = sorted(set(body) - {"label", "item_index"})
    if extra:
        raise InvalidRequest(f"unknown field(s) {', '.join(extra)}; allowed: label, item_index")
    label = body.get("label")
    if not isinstance(label, str) or not label.strip():
        raise InvalidRequest("label must be a non-empty string")
    index = body.get("item_index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InvalidRequest("item_index must be an integer >= 0")
    return FeedbackRequest(label.strip(), index)


class FeedbackStore:
    def __init__(self, dsn: str, *, max_connections: int = 8, wait_for_row_s: float = 2.0):
        self._dsn = dsn
        self._max_connections = max_connections
        self._wait_for_row_s = wait_for_row_s
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None

    def _connection(self):
        if self._pool is None:
            self._pool = psycopg2.pool.ThreadedConnectionPool(
                0, self._max_connections, self._dsn, connect_timeout=3, options="-c statement_timeout=2000"
            )
        try:
            return self._pool.getconn()
        except psycopg2.pool.PoolError:
            raise FeedbackUnavailable("too many feedback requests at once; retry") from None

    def _run(self, sql: str, params: tuple, *, fetch: bool):
        try:
            conn = self._connection()
        except psycopg2.Error as exc:
            raise FeedbackUnavailable(f"the inference database is unavailable ({type(exc).__name__})") from None
        broken = False
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchone() if fetch else None
        except psycopg2.Error as exc:
            broken = conn.closed != 0
            raise FeedbackUnavailable(f"the inference database is unavailable ({type(exc).__name__})") from None
        finally:
            self._pool.putconn(conn, close=broken)

    def find(self, tenant: str, request_id: str, item_index: int) -> tuple[str, str]:
        """(model, version) of the answered prediction; NotFound once the wait is over."""
        deadline = time.monotonic() + self._wait_for_row_s
        while True:
            row = self._run(FIND, (tenant, request_id, item_index), fetch=True)
            if row is not None:
                return row[0], row[1]
            if time.monotonic() >= deadline:
                raise NotFound(f"no prediction with request id {request_id!r} and item_index {item_index}")
            time.sleep(0.1)

    def record(
        self, tenant: str, request_id: str, item_index: int, model: str, label: str, client_id: str | None
    ) -> None:
        self._run(UPSERT, (tenant, request_id, item_index, model, label, client_id), fetch=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.closeall()
