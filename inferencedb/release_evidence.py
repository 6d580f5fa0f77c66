"""Evidence for the release gate from the inference database (heads/release_gate.py decides).
Plain counts: the database package knows nothing of the gate's statistics.

Paired (the test): items the primary answered while the candidate scored them as a shadow (the same
tenant, request_id and item_index), for which feedback gave the right label. Per pair: was the
primary right, was the candidate right.

Information only (not the test, shown with the decision):
- agreement: on shadow items without feedback, how often the candidate gave the primary's label;
- A/B feedback accuracy: each version's accuracy on the feedback of the items it answered (unpaired:
  the two versions answered different items).

Every query reads `answered_predictions` (inferencedb/migrations/0007), the one definition of an
answered prediction, over [since, until) of the prediction's time.
"""

from __future__ import annotations

import datetime as dt

from inferencedb.database import Database

DEFAULT_WINDOW = dt.timedelta(days=30)

_SHADOW_PAIRS = """
FROM answered_predictions a
JOIN predictions s
  ON s.tenant = a.tenant AND s.request_id = a.request_id AND s.item_index = a.item_index
 AND s.model = a.model AND s.role = 'shadow' AND s.status = 'ok' AND s.version = %(candidate)s
"""
_WHERE = """
WHERE a.tenant = %(tenant)s AND a.model = %(model)s AND a.role = 'primary' AND a.version = %(primary)s
  AND a.created_at >= %(since)s AND a.created_at < %(until)s
"""
PAIRED_WITH_FEEDBACK = (
    """
SELECT count(*) FILTER (WHERE a.label = f.label AND s.label = f.label),
       count(*) FILTER (WHERE a.label <> f.label AND s.label = f.label),
       count(*) FILTER (WHERE a.label = f.label AND s.label <> f.label),
       count(*) FILTER (WHERE a.label <> f.label AND s.label <> f.label)
"""
    + _SHADOW_PAIRS
    + "JOIN feedback f ON f.tenant = a.tenant AND f.request_id = a.request_id AND f.item_index = a.item_index"
    + _WHERE
)
AGREEMENT_WITHOUT_FEEDBACK = (
    "SELECT count(*), count(*) FILTER (WHERE a.label = s.label)"
    + _SHADOW_PAIRS
    + "LEFT JOIN feedback f ON f.tenant = a.tenant AND f.request_id = a.request_id AND f.item_index = a.item_index"
    + _WHERE
    + "  AND f.request_id IS NULL"
)
FEEDBACK_ACCURACY = """
SELECT p.version, p.role, count(*), count(*) FILTER (WHERE p.label = f.label)
FROM answered_predictions p
JOIN feedback f ON f.tenant = p.tenant AND f.request_id = p.request_id AND f.item_index = p.item_index
WHERE p.tenant = %(tenant)s AND p.model = %(model)s AND p.version IN (%(primary)s, %(candidate)s)
  AND p.created_at >= %(since)s AND p.created_at < %(until)s
GROUP BY 1, 2 ORDER BY 1, 2
"""


def shadow_evidence(
    db: Database,
    *,
    tenant: str,
    model: str,
    primary: str,
    candidate: str,
    until: dt.datetime | None = None,
    window: dt.timedelta = DEFAULT_WINDOW,
) -> tuple[tuple[int, int, int, int] | str, dict]:
    """(the paired cells on shadow items with feedback: both right, only the candidate right,
    only the primary right, neither; or why there are none) and the information-only figures.
    DatabaseUnavailable (inferencedb/errors.py) when the database does not answer."""
    until = until or dt.datetime.now(dt.UTC)
    params = {
        "tenant": tenant,
        "model": model,
        "primary": primary,
        "candidate": candidate,
        "since": until - window,
        "until": until,
    }
    both, candidate_only, primary_only, neither = db.run(PAIRED_WITH_FEEDBACK, params, fetch="one")
    compared, agreed = db.run(AGREEMENT_WITHOUT_FEEDBACK, params, fetch="one")
    accuracy = [
        {"version": version, "role": role, "with_feedback": n, "correct": correct, "accuracy": correct / n}
        for version, role, n, correct in db.run(FEEDBACK_ACCURACY, params)
    ]
    info = {
        "since": params["since"].isoformat(timespec="seconds"),
        "until": until.isoformat(timespec="seconds"),
        "agreement_without_feedback": {
            "compared": compared,
            "agreed": agreed,
            "rate": agreed / compared if compared else None,
        },
        "feedback_accuracy": accuracy,
    }
    cells = (both, candidate_only, primary_only, neither)
    if sum(cells) == 0:
        why = (
            f"no item answered by {primary} and scored by {candidate} as a shadow has feedback "
            f"in the last {window.days} days"
        )
        return why, info
    return cells, info
