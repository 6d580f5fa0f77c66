"""Automatic rollback, the policy and the verdict: when a newly promoted primary is undone.

A model's serving state may hold a `guard` (opt-in per model):

    "guard": {"window_s": 600, "max_error_rate": 0.02, "max_reject_rate": 0.5,
              "min_agreement": 0.7, "min_items": 50, "shadow_fraction": 1.0}

Any bound may be null (not checked); at least one is set. A promotion made while a guard is set
keeps the previous primary as a shadow (on `shadow_fraction` of requests, so agreement can be
measured) and opens a `watch` on the new primary:

    "watch": {"version": "<new primary>", "previous": "<old primary>", "since": "<promotion time>"}

For `window_s` after `since`, the router's rollback job (api/core/auto_rollback.py) counts the
new primary's rows (inferencedb/release_watch.py) and asks `breach()` whether a bound is
crossed; if so it restores the state from before the promotion. Every other change of the
serving state ends the watch: an operator who touched the model after the promotion has taken
it over, and nothing automatic undoes their change.

Pure data and arithmetic here: no files, no database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from heads.errors import RegistryError

MAX_WINDOW_S = 7 * 86400.0
BOUNDS = ("max_error_rate", "max_reject_rate", "min_agreement")


@dataclass(frozen=True)
class Guard:
    window_s: float = 600.0  # how long after a promotion the new primary is watched
    max_error_rate: float | None = None  # share of its items the primary failed to answer
    max_reject_rate: float | None = None  # share of its answers that are the reject label
    min_agreement: float | None = None  # share of shadow-compared items where it agrees with the old primary
    min_items: int = 50  # no verdict on a figure computed from fewer items
    shadow_fraction: float = 1.0  # share of requests the old primary scores as a shadow while watched

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Guard:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown guard field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Watch:
    version: str  # the primary promoted under the guard
    previous: str  # the primary it replaced, kept as a shadow
    since: str  # when it was promoted (ISO 8601, UTC, microseconds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Watch:
        return cls(str(data["version"]), str(data["previous"]), str(data["since"]))

    @property
    def started(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.since)

    def ends(self, guard: Guard) -> dt.datetime:
        return self.started + dt.timedelta(seconds=guard.window_s)


def make_guard(
    *,
    window_s: float = 600.0,
    max_error_rate: float | None = None,
    max_reject_rate: float | None = None,
    min_agreement: float | None = None,
    min_items: int = 50,
    shadow_fraction: float = 1.0,
) -> Guard:
    """A checked guard; RegistryError naming the first value out of range."""
    guard = Guard(float(window_s), max_error_rate, max_reject_rate, min_agreement, int(min_items), shadow_fraction)
    check_guard(guard)
    return guard


def check_guard(guard: Guard) -> None:
    if not 0 < guard.window_s <= MAX_WINDOW_S:
        raise RegistryError(f"guard window must be in (0, {MAX_WINDOW_S:g}] seconds, got {guard.window_s:g}")
    for name in BOUNDS:
        value = getattr(guard, name)
        if value is not None and not 0 <= value <= 1:
            raise RegistryError(f"guard {name} must be in [0, 1], got {value:g}")
    if all(getattr(guard, name) is None for name in BOUNDS):
        raise RegistryError(f"a guard needs at least one bound: {', '.join(BOUNDS)}")
    if guard.min_items < 1:
        raise RegistryError(f"guard min_items must be >= 1, got {guard.min_items}")
    if not 0 < guard.shadow_fraction <= 1:
        raise RegistryError(f"guard shadow_fraction must be in (0, 1], got {guard.shadow_fraction:g}")


def describe_guard(guard: Guard) -> str:
    """One line for the serving history: "window 600s: error_rate <= 0.02, agreement >= 0.7 (50+ items)"."""
    bounds = [
        f"{name.removeprefix('max_').removeprefix('min_')} {'>=' if name.startswith('min_') else '<='} {value:g}"
        for name in BOUNDS
        if (value := getattr(guard, name)) is not None
    ]
    return f"window {guard.window_s:g}s: {', '.join(bounds)} ({guard.min_items}+ items)"


def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "10m", "2h" or "1d" (the CLI's --window)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:], None)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        raise RegistryError(f"a duration is a number with s, m, h or d (90s, 10m, 2h), got {text!r}") from None
    return seconds


class Counts(Protocol):
    """What the inference log says of a watched primary (inferencedb/release_watch.py)."""

    asked: int  # items it was asked to answer (its own rows, and those the fallback answered)
    failed: int  # of those, not answered by it
    answered: int  # its answers (status ok)
    rejected: int  # of those, the reject label
    compared: int  # answers the old primary also scored as a shadow
    agreed: int  # of those, the same label


@dataclass(frozen=True)
class Breach:
    bound: str
    value: float
    limit: float
    items: int

    def reason(self) -> str:
        sign = "<" if self.bound.startswith("min_") else ">"
        return f"{self.bound.removeprefix('max_').removeprefix('min_')} {self.value:.3f} {sign} {self.limit:g} over {self.items} items"


def figures(counts: Counts) -> dict:
    """The rates behind a verdict, for the record (None where nothing was counted)."""

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return {
        "error_rate": rate(counts.failed, counts.asked),
        "reject_rate": rate(counts.rejected, counts.answered),
        "agreement": rate(counts.agreed, counts.compared),
        **{name: getattr(counts, name) for name in ("asked", "failed", "answered", "rejected", "compared", "agreed")},
    }


def breach(guard: Guard, counts: Counts) -> Breach | None:
    """The first bound the counts cross, each judged only once it rests on `min_items` items;
    None when none is crossed (yet)."""
    checks = (
        ("max_error_rate", counts.failed, counts.asked),
        ("max_reject_rate", counts.rejected, counts.answered),
        ("min_agreement", counts.agreed, counts.compared),
    )
    for bound, part, whole in checks:
        limit = getattr(guard, bound)
        if limit is None or whole < guard.min_items:
            continue
        value = part / whole
        if (value < limit) if bound.startswith("min_") else (value > limit):
            return Breach(bound, value, limit, whole)
    return None
