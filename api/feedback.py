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

from api.database import Database
from api.errors import InvalidRequest, NotFound
from api.validation import integer, json_type

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


@dataclass(frozen=True)
class FeedbackRequest:
    label: str
    item_index: int


def parse_feedback(body: object) -> FeedbackRequest:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {json_type(body)}")
    extra = sorted(set(body) - {"label", "item_index"})
    if extra:
        raise InvalidRequest(f"unknown field(s) {', '.join(extra)}; allowed: label, item_index")
    if "label" not in body:
        raise InvalidRequest("the field label is required")
    label = body["label"]
    if not isinstance(label, str) or not label:
        raise InvalidRequest(f"label must be a non-empty string, got {json_type(label)}")
    index = integer(body.get("item_index", 0), "item_index")
    if index < 0:
        raise InvalidRequest(f"item_index must be >= 0, got {index}")
    return FeedbackRequest(label, index)


class FeedbackStore:
    def __init__(self, database: Database, *, wait_for_row_s: float = 2.0):
        self._db = database
        self._wait_for_row_s = wait_for_row_s

    def find(self, tenant: str, request_id: str, item_index: int) -> tuple[str, str]:
        """(model, version) of the answered prediction; NotFound once the wait is over."""
        deadline = time.monotonic() + self._wait_for_row_s
        while True:
            row = self._db.run(FIND, (tenant, request_id, item_index), fetch="one")
            if row is not None:
                return row[0], row[1]
            if time.monotonic() >= deadline:
                raise NotFound(f"no prediction with request id {request_id!r} and item_index {item_index}")
            time.sleep(0.1)

    def record(
        self, tenant: str, request_id: str, item_index: int, model: str, label: str, client_id: str | None
    ) -> None:
        self._db.run(UPSERT, (tenant, request_id, item_index, model, label, client_id), fetch="none")
