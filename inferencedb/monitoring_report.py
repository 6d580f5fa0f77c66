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
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from inferencedb.centroids import float8_array
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
# The drift inputs are written once, over every model of the window, grouped by (tenant, model,
# ...): `drift_inputs` runs them as they are for the drift monitor (two queries whatever the
# number of models) or with `model_filter` narrowing them to one model for its report. The labels
# and the confidence histogram of the answers are counted by label and confidence bucket (NULL for
# an answer without a probability: it counts for its label only; the CASE is needed, as least()
# ignores a NULL and would put it in bucket 9). The report scans the window's answers
# (`ANSWERS`); the drift monitor, which looks at the last hour every few minutes, sums the counts
# the routers wrote per minute (`ANSWER_COUNTS`, inferencedb/answer_counts.py), so that its cost
# does not follow the traffic.
CONFIDENCE_BUCKET = "CASE WHEN probability IS NOT NULL THEN least(floor(probability * 10), 9)::int END"
ANSWERS = f"""
SELECT tenant, model, version, role, label, {CONFIDENCE_BUCKET}, count(*)
FROM predictions
WHERE created_at >= %(since)s AND created_at < %(until)s AND status = 'ok'{{model_filter}}
GROUP BY 1, 2, 3, 4, 5, 6
"""
ANSWER_COUNTS = """
SELECT tenant, model, version, role, label, confidence_bucket, sum(n)::bigint
FROM answer_counts
WHERE bucket_start >= %(since)s AND bucket_start < %(until)s{model_filter}
GROUP BY 1, 2, 3, 4, 5, 6
"""
CENTROIDS = """
SELECT tenant, model, version, n, array_send(vector_sum) FROM embedding_centroids
WHERE bucket_start >= %(since)s AND bucket_start < %(until)s{model_filter}
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
    names = tuple(sorted(baseline))
    return _psi(live, names, np.array([baseline[name] for name in names], dtype=np.float64))


def _psi(live: dict[str, float], names: tuple[str, ...], counts: np.ndarray) -> float | None:
    """PSI of the `live` counts against the baseline `counts` of the labels `names`. A label on one
    side only counts with a share of EPSILON on the other."""
    extra = sorted(set(live).difference(names)) if len(live) else []
    live_counts = np.array([live.get(name, 0) for name in names] + [live[name] for name in extra], dtype=np.float64)
    return _psi_aligned(live_counts, counts)


def _psi_aligned(live: np.ndarray, baseline: np.ndarray) -> float | None:
    """PSI of two count vectors, position by position; the shorter one counts 0 beyond its end."""
    size = max(len(live), len(baseline))
    live, baseline = (np.pad(counts, (0, size - len(counts))) for counts in (live, baseline))
    live_total, base_total = live.sum(), baseline.sum()
    if not live_total or not base_total:
        return None
    p = np.maximum(live / live_total, EPSILON)
    q = np.maximum(baseline / base_total, EPSILON)
    return float(((p - q) * np.log(p / q)).sum())


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass
class ObservedGroup:
    """What a window shows of one (version, role): the labels of its answers, counted, and the
    histogram of their confidence in BUCKETS buckets."""

    labels: dict[str, int] = field(default_factory=dict)
    confidence: list[int] = field(default_factory=lambda: [0] * BUCKETS)


@dataclass
class ObservedModel:
    """The drift inputs of one model over a window: per (version, role) what it answered, and per
    version the count and sum of the embeddings the router saw (embedding_centroids)."""

    groups: dict[tuple[str, str], ObservedGroup] = field(default_factory=dict)
    centroid_sums: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)

    def group(self, version: str, role: str) -> ObservedGroup:
        return self.groups.setdefault((version, role), ObservedGroup())

    def add_centroid(self, version: str, n: int, vector_sum) -> None:
        total, summed = self.centroid_sums.get(version, (0, None))
        vector = np.asarray(vector_sum)
        self.centroid_sums[version] = (total + n, vector if summed is None else summed + vector)


@dataclass(frozen=True, eq=False)
class TrainingBaseline:
    """A version's training baseline in the form drift compares with: the training label counts
    (names, and counts in their order), the validation confidence histogram and the training
    embedding centroid. Versions are immutable, so a drift monitor keeps these between runs
    instead of reading the manifests again: 4-5 KB each, the label names interned."""

    labels: tuple[str, ...] = ()
    label_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))
    centroid: np.ndarray | None = None
    reject_label: str | None = None

    @classmethod
    def from_manifest(cls, baseline: dict) -> TrainingBaseline:
        """From a manifest's "baseline" ({}: no figures, for a version that does not read)."""
        distribution = baseline.get("label_distribution") or {}
        labels = tuple(sys.intern(name) for name in sorted(distribution))
        centroid = baseline.get("centroid")
        return cls(
            labels=labels,
            label_counts=np.array([distribution[name] for name in labels], dtype=np.float64),
            confidence=np.asarray(baseline.get("confidence_histogram") or [], dtype=np.float64),
            centroid=None if not centroid else np.asarray(centroid, dtype=np.float64),
            reject_label=baseline.get("reject_label"),
        )


def drift_inputs(
    db: Database,
    since: dt.datetime,
    until: dt.datetime,
    *,
    tenant: str | None = None,
    model: str | None = None,
    counted: bool = False,
) -> dict[tuple[str, str], ObservedModel]:
    """{(tenant, model): its drift inputs over [since, until)} for every model with answers in the
    window, or only for `tenant`'s `model`: two queries whatever the number of models. `counted`:
    the answers from the routers' per-minute counts (minutes starting in the window) instead of
    the predictions themselves."""
    params = {"since": since, "until": until, "tenant": tenant, "model": model}
    model_filter = "" if model is None else " AND tenant = %(tenant)s AND model = %(model)s"
    observed: dict[tuple[str, str], ObservedModel] = defaultdict(ObservedModel)
    answers = ANSWER_COUNTS if counted else ANSWERS
    for tenant_, model_, version, role, label, bucket, count in db.run(
        answers.format(model_filter=model_filter), params
    ):
        group = observed[tenant_, model_].group(version, role)
        group.labels[label] = group.labels.get(label, 0) + count
        if bucket is not None:
            group.confidence[bucket] += count
    for tenant_, model_, version, n, vector_sum in db.run(CENTROIDS.format(model_filter=model_filter), params):
        observed[tenant_, model_].add_centroid(version, n, float8_array(vector_sum))
    return dict(observed)


def drift(observed: ObservedModel, version: str, role: str, baseline: TrainingBaseline) -> dict:
    """The drift of `version` answering as `role` against its training `baseline` (an empty one
    gives no figures): PSI of the labels and of the confidence, and the cosine distance of the
    live embedding centroid to the training one."""
    group = observed.groups.get((version, role), ObservedGroup())
    centroid = None
    total, summed = observed.centroid_sums.get(version, (0, None))
    if total and baseline.centroid is not None:
        centroid = cosine_distance(summed / total, baseline.centroid)
    return {
        "label_psi": _psi(group.labels, baseline.labels, baseline.label_counts),
        "confidence_psi": _psi_aligned(np.asarray(group.confidence, dtype=np.float64), baseline.confidence),
        "centroid_cosine_distance": centroid,
    }


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
    counts = {(version, role): (volume, errors, low) for version, role, volume, errors, low in db.run(COUNTS, params)}
    observed = drift_inputs(db, since, until, tenant=tenant, model=model).get((tenant, model), ObservedModel())
    feedback = {(v, r): (n, correct) for v, r, n, correct in db.run(FEEDBACK, params)}

    versions = []
    for version, role in sorted(set(counts) | set(observed.groups)):
        volume, errors, low = counts.get((version, role), (0, 0, 0))
        group = observed.groups.get((version, role), ObservedGroup())
        baseline = TrainingBaseline.from_manifest(baseline_of(version))
        answered = volume - errors
        reject = baseline.reject_label
        n_feedback, correct = feedback.get((version, role), (0, 0))
        versions.append(
            {
                "version": version,
                "role": role,
                "volume": volume,
                "errors": errors,
                "label_distribution": dict(sorted(group.labels.items())),
                "confidence_histogram": group.confidence,
                "low_confidence_rate": low / answered if answered else None,
                "rejected_rate": group.labels.get(reject, 0) / answered if answered and reject else None,
                "feedback": {
                    "count": n_feedback,
                    "correct": correct,
                    "accuracy": correct / n_feedback if n_feedback else None,
                },
                "drift": drift(observed, version, role, baseline),
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
