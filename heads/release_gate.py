"""The release gate's statistics and decision: is a candidate version better than the primary, or
not worse within a margin, on paired outcomes (the same items scored by both)?

Pure Python (math and statistics only): the router imports it, and routers never import
TensorFlow. The evidence comes from heads/paired_evidence.py (held-out split at training time)
and inferencedb/release_evidence.py (shadow traffic with feedback); heads/gated_promotion.py
applies the decision to the serving state.

For n paired items, b = candidate right and primary wrong, c = primary right and candidate wrong:
- "different": McNemar's exact test, the two-sided binomial test of b against b + c discordant
  pairs at p = 1/2 (exact: the asymptotic chi-square is poor for the few discordant pairs a
  small gate sees).
- "how much": the paired accuracy difference (b - c) / n with a Wald interval after adding 1/2 to
  each of the four cells (Agresti and Min, 2005): unlike the plain Wald interval it does not
  shrink to a point when no pair is discordant, and it covers well at the sizes a gate sees.

A candidate is promoted on a source with at least `min_items` pairs when it is significantly
better (p < alpha and b > c) or non-inferior: the interval's lower end >= -margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

# One point of accuracy. The interval's lower end for n pairs with no discordant pair is about
# -1.96 / (n + 2): with half a point, even a candidate that answers exactly like the primary would
# need about 390 pairs, and min_items would mean nothing. With one point such a candidate passes at
# the minimum of 200 pairs, and one that changes answers needs more evidence the more it changes.
DEFAULT_MARGIN = 0.01
DEFAULT_MIN_ITEMS = 200
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class GatePolicy:
    """What the gate asks of the evidence."""

    margin: float = DEFAULT_MARGIN  # accepted loss of accuracy, as a fraction (0.01 = 1 point)
    min_items: int = DEFAULT_MIN_ITEMS  # paired items a source needs before it can promote
    alpha: float = DEFAULT_ALPHA  # significance level; the interval's confidence is 1 - alpha

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if self.min_items < 1:
            raise ValueError(f"min_items must be at least 1, got {self.min_items}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def to_dict(self) -> dict:
        return {"margin": self.margin, "min_items": self.min_items, "alpha": self.alpha}


@dataclass(frozen=True)
class PairedCounts:
    """The four cells of paired outcomes."""

    both: int = 0  # both right
    candidate_only: int = 0  # b: only the candidate right
    primary_only: int = 0  # c: only the primary right
    neither: int = 0

    @property
    def n(self) -> int:
        return self.both + self.candidate_only + self.primary_only + self.neither

    def __add__(self, other: PairedCounts) -> PairedCounts:
        return PairedCounts(
            self.both + other.both,
            self.candidate_only + other.candidate_only,
            self.primary_only + other.primary_only,
            self.neither + other.neither,
        )

    @classmethod
    def from_outcomes(cls, outcomes) -> PairedCounts:
        """From (primary right, candidate right) pairs of booleans."""
        cells = [0, 0, 0, 0]
        for primary_right, candidate_right in outcomes:
            cells[(0 if candidate_right else 2) + (0 if primary_right else 1)] += 1
        both, candidate_only, primary_only, neither = cells
        return cls(both, candidate_only, primary_only, neither)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(a split of the b + c discordant pairs at least as
    uneven as this one) under Binomial(b + c, 1/2). 1.0 when there are no discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # Sum in log space: 2^-n underflows a float beyond about a thousand discordant pairs.
    log_half = -n * math.log(2)
    tail = sum(math.exp(_log_comb(n, i) + log_half) for i in range(k + 1))
    return min(1.0, 2 * tail)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def difference_interval(counts: PairedCounts, alpha: float = DEFAULT_ALPHA) -> tuple[float, float, float]:
    """(difference, low, high): the accuracy of the candidate minus that of the primary, and its
    two-sided 1 - alpha interval (Agresti-Min: a half added to each cell), clipped to [-1, 1]."""
    n = counts.n
    if n == 0:
        return 0.0, -1.0, 1.0
    difference = (counts.candidate_only - counts.primary_only) / n
    b, c, m = counts.candidate_only + 0.5, counts.primary_only + 0.5, n + 2
    shifted = (b - c) / m
    se = math.sqrt(max((b + c) / m - shifted**2, 0.0) / m)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return difference, max(-1.0, shifted - z * se), min(1.0, shifted + z * se)


@dataclass(frozen=True)
class SourceVerdict:
    """What one source of paired outcomes says."""

    counts: PairedCounts
    difference: float
    low: float
    high: float
    p_value: float
    enough: bool  # n >= min_items
    better: bool  # significantly better
    worse: bool  # significantly worse
    non_inferior: bool  # interval's low end >= -margin

    @property
    def passes(self) -> bool:
        return self.enough and (self.better or self.non_inferior)

    def to_dict(self) -> dict:
        return {
            "n": self.counts.n,
            "both_right": self.counts.both,
            "candidate_only_right": self.counts.candidate_only,
            "primary_only_right": self.counts.primary_only,
            "neither_right": self.counts.neither,
            "difference": round(self.difference, 6),
            "ci_low": round(self.low, 6),
            "ci_high": round(self.high, 6),
            "p_value": _round_p(self.p_value),
            "enough_items": self.enough,
            "significantly_better": self.better,
            "significantly_worse": self.worse,
            "non_inferior": self.non_inferior,
        }


def _round_p(p: float) -> float:
    return float(f"{p:.4g}")


def judge(counts: PairedCounts, policy: GatePolicy) -> SourceVerdict:
    difference, low, high = difference_interval(counts, policy.alpha)
    p = mcnemar_exact_p(counts.candidate_only, counts.primary_only)
    significant = p < policy.alpha
    return SourceVerdict(
        counts=counts,
        difference=difference,
        low=low,
        high=high,
        p_value=p,
        enough=counts.n >= policy.min_items,
        better=significant and counts.candidate_only > counts.primary_only,
        worse=significant and counts.candidate_only < counts.primary_only,
        non_inferior=low >= -policy.margin,
    )


def _points(x: float) -> str:
    return f"{x * 100:.1f}"


def describe(verdict: SourceVerdict, policy: GatePolicy) -> str:
    """One sentence a person can act on, with the numbers."""
    ci = f"{round(100 * (1 - policy.alpha))}% CI {_points(verdict.low)}..{_points(verdict.high)}"
    tail = f"({ci}), p={_round_p(verdict.p_value):g}, {verdict.counts.n} paired items"
    if verdict.worse:
        return f"candidate worse by {_points(-verdict.difference)} points {tail}"
    if not verdict.enough:
        return f"only {verdict.counts.n} paired items, need {policy.min_items}"
    if verdict.better:
        return f"candidate better by {_points(verdict.difference)} points {tail}"
    if verdict.non_inferior:
        return (
            f"candidate not worse than the primary within {_points(policy.margin)} points: difference "
            f"{_points(verdict.difference)} points {tail}"
        )
    return (
        f"candidate not shown within {_points(policy.margin)} points of the primary: difference "
        f"{_points(verdict.difference)} points {tail}; more items would narrow the interval"
    )


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    sources: dict  # source name -> {"available": ..., and the verdict's numbers or "why"}


def decide(sources: dict[str, PairedCounts | str], policy: GatePolicy) -> Decision:
    """The gate's decision on every source of paired outcomes (name -> counts, or a string saying
    why the source is unavailable). Promote when at least one source has `min_items` pairs, every
    such source shows the candidate better or non-inferior, and no source, however small, shows it
    significantly worse: the candidate must not lose on any evidence there is."""
    report: dict[str, dict] = {}
    verdicts: dict[str, SourceVerdict] = {}
    for name, evidence in sources.items():
        if isinstance(evidence, str):
            report[name] = {"available": False, "why": evidence}
            continue
        verdicts[name] = verdict = judge(evidence, policy)
        report[name] = {"available": True, **verdict.to_dict(), "summary": describe(verdict, policy)}
    if not verdicts:
        whys = "; ".join(f"{name}: {entry['why']}" for name, entry in report.items())
        return Decision(False, f"no paired evidence ({whys})", report)
    worse = [(name, v) for name, v in verdicts.items() if v.worse]
    if worse:
        name, verdict = worse[0]
        return Decision(False, f"{name}: {describe(verdict, policy)}", report)
    deciding = {name: v for name, v in verdicts.items() if v.enough}
    if not deciding:
        name, verdict = max(verdicts.items(), key=lambda item: item[1].counts.n)
        return Decision(False, f"{name}: {describe(verdict, policy)}", report)
    failing = [(name, v) for name, v in deciding.items() if not v.passes]
    if failing:
        name, verdict = failing[0]
        return Decision(False, f"{name}: {describe(verdict, policy)}", report)
    reason = "; ".join(f"{name}: {describe(v, policy)}" for name, v in deciding.items())
    return Decision(True, reason, report)
