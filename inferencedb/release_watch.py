"""The figures of a watched promotion, read from the inference log (see heads/rollback_guard.py).

For a new primary `version` of `tenant`/`model`, in a slice [since, until) of created_at:

- asked: items the primary was asked to answer: its own rows in role primary, plus the rows the
  fallback answered (the router logs a fallback's answer in place of the primary's failure, so
  the cause is not in the log: an embedder outage in the window counts as failures too);
- failed: of those, its rows with an error status, plus the fallback's rows;
- answered / rejected: its rows with status ok / of those, the reject label;
- compared / agreed: the `previous` primary's shadow rows in the slice that score the same item
  (request_id, item_index) as one of its answers / of those, with the same label.

Slices add up (`ReleaseCounts.__add__`), so the job reads each row once however long the window:
both queries are bounded by the slice and served by the indexes on (tenant, model, created_at)
and (request_id). A shadow row is written after its answer's row (the shadow scores after the
answer is sent), so counting comparisons by the shadow row's time finds its answer already there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

from inferencedb.database import Database

PRIMARY_COUNTS = """
SELECT count(*) FILTER (WHERE role = 'primary'),
       count(*) FILTER (WHERE role = 'fallback'),
       count(*) FILTER (WHERE role = 'primary' AND status = 'ok'),
       count(*) FILTER (WHERE role = 'primary' AND status = 'ok' AND label = %(reject_label)s)
FROM predictions
WHERE tenant = %(tenant)s AND model = %(model)s AND created_at >= %(since)s AND created_at < %(until)s
  AND ((role = 'primary' AND version = %(version)s) OR role = 'fallback')
"""
AGREEMENT = """
SELECT count(*), count(*) FILTER (WHERE a.label = s.label)
FROM predictions s
JOIN predictions a
  ON a.request_id = s.request_id AND a.item_index = s.item_index AND a.tenant = s.tenant AND a.model = s.model
 AND a.role = 'primary' AND a.version = %(version)s AND a.status = 'ok' AND a.created_at >= %(watch_since)s
WHERE s.tenant = %(tenant)s AND s.model = %(model)s AND s.version = %(previous)s AND s.role = 'shadow'
  AND s.status = 'ok' AND s.created_at >= %(since)s AND s.created_at < %(until)s
"""


@dataclass(frozen=True)
class ReleaseCounts:
    asked: int = 0
    failed: int = 0
    answered: int = 0
    rejected: int = 0
    compared: int = 0
    agreed: int = 0

    def __add__(self, other: ReleaseCounts) -> ReleaseCounts:
        return ReleaseCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def count_slice(
    database: Database,
    *,
    tenant: str,
    model: str,
    version: str,
    previous: str,
    reject_label: str | None,
    watch_since: dt.datetime,
    since: dt.datetime,
    until: dt.datetime,
) -> ReleaseCounts:
    """The counts of rows created in [since, until) (DatabaseUnavailable when the database is)."""
    params = {
        "tenant": tenant,
        "model": model,
        "version": version,
        "previous": previous,
        "reject_label": reject_label,  # None: label = NULL is never true, nothing is rejected
        "watch_since": watch_since,
        "since": since,
        "until": until,
    }
    own, fallback, answered, rejected = database.run(PRIMARY_COUNTS, params, fetch="one")
    compared, agreed = database.run(AGREEMENT, params, fetch="one")
    return ReleaseCounts(own + fallback, own - answered + fallback, answered, rejected, compared, agreed)
