"""Feedback: the correct label for a prediction, stored in the `feedback` table, and read back as
labelled examples for training.

A correction refers to an answered prediction (a row of the `answered_predictions` view, the one
definition of "answered"). A prediction's row reaches PostgreSQL a fraction of a second after the
answer (inferencedb/inference_log.py), so the lookup waits briefly for it before saying there is
none. Feedback is upserted: the last correction wins. The HTTP side (POST
/v1/predictions/<request_id>/feedback) is api/web/routes_predict.py.
"""

from __future__ import annotations

import time

from inferencedb.database import Database

FIND = """
SELECT model, version FROM answered_predictions
WHERE tenant = %s AND request_id = %s AND item_index = %s
ORDER BY created_at DESC LIMIT 1
"""
UPSERT = """
INSERT INTO feedback (tenant, request_id, item_index, model, label, client_id)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant, request_id, item_index)
DO UPDATE SET label = EXCLUDED.label, client_id = EXCLUDED.client_id, created_at = now()
"""


class FeedbackStore:
    def __init__(self, database: Database, *, wait_for_row_s: float = 2.0):
        self._db = database
        self._wait_for_row_s = wait_for_row_s

    def find(self, tenant: str, request_id: str, item_index: int) -> tuple[str, str] | None:
        """(model, version) of the answered prediction; None once the wait is over."""
        deadline = time.monotonic() + self._wait_for_row_s
        while True:
            row = self._db.run(FIND, (tenant, request_id, item_index), fetch="one")
            if row is not None:
                return row[0], row[1]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def record(
        self, tenant: str, request_id: str, item_index: int, model: str, label: str, client_id: str | None
    ) -> None:
        self._db.run(UPSERT, (tenant, request_id, item_index, model, label, client_id), fetch="none")


# Training on feedback (heads/pipeline.py): each corrected prediction's text with its right label.
LABELLED_EXAMPLES = """
SELECT p.input_text AS text, f.label AS label
FROM feedback f
JOIN answered_predictions p ON p.tenant = f.tenant AND p.request_id = f.request_id AND p.item_index = f.item_index
WHERE f.tenant = %(tenant)s AND p.model = %(model)s AND f.created_at >= %(since)s AND f.created_at < %(until)s
ORDER BY f.created_at, f.request_id, f.item_index
"""
