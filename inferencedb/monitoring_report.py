"""Monitoring report of one model over a time window, from the inference database.

Per version and role: volume, errors, label distribution, confidence histogram, low-confidence
and rejected shares, accuracy measured on feedback, and drift against the version's training
baseline (heads/pipeline.py stores it in the manifest): PSI of the label and confidence
distributions, and the cosine distance between the live and the training embedding centroid.
Plus the agreement rate between the answer and each shadow.

The SQL here uses the same definitions as the documented views (inferencedb/migrations/0003 and 0007)
with a created_at range, so for whole UTC days the numbers equal what the views give (tested).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from inferencedb.database import Database
from inferencedb.errors import InvalidInstant, InvalidWindow

BUCKETS = 10
MAX_WINDOW = dt.timedelta(days=92)
DEFAULT_WINDOW = dt.timedelta(days=1)
# RFC 3339 section 5.6: full-date, or full-date "T" partial-time time-offset ("T" and "Z" in
# either case, any number of fraction digits; only the first six count).
INSTANT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?",
    re.ASCII,
)
EPSILON = 1e-4  # floor for shares in PSI, so a label absent on one side does not give infinity

COUNTS = """
SELECT version, role, count(*), count(*) FILTER (WHERE status <> 'ok'),
       count(*) FILTER (WHERE status = 'ok' AND probability < 0.5)
FROM predictions
WHERE tenant = %(tenant)s AND model = %(model)s AND created_at >= %(since)s AND created_at < %(until)s
GROUP BY 1, 2
"""
LABELS = """
SELECT version, role, label, count(*)
FROM predictions
WHERE tenant = %(tenant)s AND model = %(model)s AND created_at >= %(since)s AND created_at < %(until)s AND status = 'ok'
GROUP BY 1, 2, 3
"""
CONFIDENCE = """
SELECT version, role, least(floor(probability * 10), 9)::int, count(*)
FROM predictions
WHERE tenant = %(tenant)s AND model = %(model)s AND created_at >= %(since)s AND created_at < %(until)s
  AND status = 'ok' AND probability IS NOT NULL
GROUP BY 1, 2, 3
"""
AGREEMENT = """
SELECT a.version, s.version, count(*), count(*) FILTER (WHERE a.label = s.label)
FROM answered_predictions a
JOIN predictions s
  ON s.tenant = a.tenant AND s.request_id = a.request_id AND s.item_index = a.item_index
 AND s.model = a.model AND s.role = 'shadow' AND s.status = 'ok'
WHERE a.tenant = %(tenant)s AND a.model = %(model)s AND a.created_at >= %(since)s AND a.created_at < %(until)s
GROUP BY 1, 2
"""
FEEDBACK = """
SELECT p.version, p.role, count(*), count(*) FILTER (WHERE p.label = f.label)
FROM answered_predictions p
JOIN feedback f ON f.tenant = p.tenant AND f.request_id = p.request_id AND f.item_index = p.item_index
WHERE p.tenant = %(tenant)s AND p.model = %(model)s AND p.created_at >= %(since)s AND p.created_at < %(until)s
GROUP BY 1, 2
"""
ACTIVE_MODELS = """
SELECT DISTINCT tenant, model FROM predictions WHERE created_at >= %(since)s AND created_at < %(until)s
"""
CENTROIDS = """
SELECT version, n, vector_sum FROM embedding_centroids
WHERE tenant = %(tenant)s AND model = %(model)s AND bucket_start >= %(since)s AND bucket_start < %(until)s
"""


def parse_instant(value: str, name: str) -> dt.datetime:
    """An RFC 3339 full-date (midnight UTC) or date-time (with its offset), as UTC: exactly what
    `format: date` and `format: date-time` promise in the contract. InvalidInstant for anything else."""
    match = INSTANT.fullmatch(value)
    if match is None:
        raise InvalidInstant(
            f"{name} must be an RFC 3339 date (2026-11-01) or date-time with an offset "
            f"(2026-11-01T12:00:00Z, 2026-11-01T12:00:00+02:00), got {value!r}"
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if year == "0000":
        raise InvalidWindow(f"{name} is outside the years 1-9999: {value!r}")
    try:
        date = dt.date(int(year), int(month), int(day))
    except ValueError as exc:
        raise InvalidInstant(f"{name} is not a date of the calendar ({exc}): {value!r}") from None
    if hour is None:
        return dt.datetime.combine(date, dt.time(), dt.UTC)
    if zone.upper() == "Z":
        offset = dt.timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        offset = sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60 or abs(offset) >= dt.timedelta(days=1):
        raise InvalidInstant(f"{name} is not a time of day: {value!r}")
    micro = int((fraction or ".")[1:7].ljust(6, "0"))
    if int(second) == 60:  # a leap second: the last instant of its minute
        second, micro = "59", 999_999
    local = dt.datetime.combine(date, dt.time(int(hour), int(minute), int(second), micro), dt.timezone(offset))
    try:
        return local.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidWindow(f"{name} is outside the years 1-9999 once converted to UTC: {value!r}") from None


def parse_window(
    since: str | None, until: str | None, *, now: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """The report's window [since, until) in UTC; default: the 24 hours before until (now)."""
    end = parse_instant(until, "until") if until is not None else (now or dt.datetime.now(dt.UTC))
    if since is not None:
        start = parse_instant(since, "since")
    elif end - dt.datetime.min.replace(tzinfo=dt.UTC) < DEFAULT_WINDOW:
        raise InvalidWindow(f"until is too early for the default window of 24 hours before it: {until!r}")
    else:
        start = end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidWindow(f"since ({start.isoformat()}) must be earlier than until ({end.isoformat()})")
    if end - start > MAX_WINDOW:
        raise InvalidWindow(f"the window is limited to {MAX_WINDOW.days} days; it spans {end - start}")
    return start, end


def psi(live: dict[str, float], baseline: dict[str, float]) -> float | None:
    """Population stability index of two distributions given as counts or shares."""
    live_total, base_total = sum(live.values()), sum(baseline.values())
    if not live_total or not base_total:
        return None
    keys = sorted(set(live) | set(baseline))  # a fixed order: the same sum in every process
    value = 0.0
    for key in keys:
        p = max(live.get(key, 0) / live_total, EPSILON)
        q = max(baseline.get(key, 0) / base_total, EPSILON)
        value += (p - q) * math.log(p / q)
    return value


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def models_with_traffic(db: Database, since: dt.datetime, until: dt.datetime) -> set[tuple[str, str]]:
    """(tenant, model) of every model with a prediction in [since, until): the only ones whose
    report has anything to say."""
    return {(tenant, model) for tenant, model in db.run(ACTIVE_MODELS, {"since": since, "until": until})}


def build_report(
    db: Database,
    model: str,
    since: dt.datetime,
    until: dt.datetime,
    *,
    tenant: str,
    baseline_of: Callable[[str], dict],
) -> dict:
    """The report of `tenant`'s `model` over [since, until). `baseline_of(version)` gives the
    version's training baseline (the manifest's "baseline"), {} when the version is unknown: that
    version is then reported without drift."""
    params = {"tenant": tenant, "model": model, "since": since, "until": until}
    groups: dict[tuple[str, str], dict] = {}

    def group(version: str, role: str) -> dict:
        return groups.setdefault(
            (version, role),
            {
                "version": version,
                "role": role,
                "volume": 0,
                "errors": 0,
                "low_confidence": 0,
                "labels": {},
                "confidence": [0] * BUCKETS,
            },
        )

    for version, role, volume, errors, low in db.run(COUNTS, params):
        g = group(version, role)
        g.update(volume=volume, errors=errors, low_confidence=low)
    for version, role, label, count in db.run(LABELS, params):
        group(version, role)["labels"][label] = count
    for version, role, bucket, count in db.run(CONFIDENCE, params):
        group(version, role)["confidence"][bucket] = count
    feedback = {(v, r): (n, correct) for v, r, n, correct in db.run(FEEDBACK, params)}
    centroid_sums: dict[str, list] = defaultdict(lambda: [0, None])
    for version, n, vector_sum in db.run(CENTROIDS, params):
        entry = centroid_sums[version]
        entry[0] += n
        entry[1] = np.asarray(vector_sum) if entry[1] is None else entry[1] + np.asarray(vector_sum)

    versions = []
    for (version, role), g in sorted(groups.items()):
        baseline = baseline_of(version)
        answered = g["volume"] - g["errors"]
        reject = baseline.get("reject_label")
        n_feedback, correct = feedback.get((version, role), (0, 0))
        centroid = None
        if version in centroid_sums and baseline.get("centroid"):
            total, summed = centroid_sums[version]
            centroid = cosine_distance(summed / total, np.asarray(baseline["centroid"])) if total else None
        versions.append(
            {
                "version": version,
                "role": role,
                "volume": g["volume"],
                "errors": g["errors"],
                "label_distribution": dict(sorted(g["labels"].items())),
                "confidence_histogram": g["confidence"],
                "low_confidence_rate": g["low_confidence"] / answered if answered else None,
                "rejected_rate": g["labels"].get(reject, 0) / answered if answered and reject else None,
                "feedback": {
                    "count": n_feedback,
                    "correct": correct,
                    "accuracy": correct / n_feedback if n_feedback else None,
                },
                "drift": {
                    "label_psi": psi(g["labels"], baseline.get("label_distribution", {})),
                    "confidence_psi": psi(
                        {str(i): c for i, c in enumerate(g["confidence"])},
                        {str(i): c for i, c in enumerate(baseline.get("confidence_histogram", []))},
                    ),
                    "centroid_cosine_distance": centroid,
                },
            }
        )
    agreement = [
        {
            "answered_version": a,
            "shadow_version": s,
            "compared": n,
            "agreed": agreed,
            "agreement_rate": agreed / n if n else None,
        }
        for a, s, n, agreed in sorted(db.run(AGREEMENT, params))
    ]
    return {
        "model": model,
        "tenant": tenant,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "versions": versions,
        "shadow_agreement": agreement,
    }
