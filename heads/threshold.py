"""Choosing the operating threshold on the validation split.

A head answers its top label unless the top probability is below the threshold, in which case
it answers the reject label. Raising the threshold trades in-scope accuracy for out-of-scope
recall; `tradeoff_curve` traces that trade and `choose_threshold` picks the point the config asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heads.config import ThresholdConfig
from heads.decision import DecisionRule


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    in_scope_accuracy: float
    oos_recall: float
    coverage: float  # share of rows answered with a label other than the reject label


def _candidates(top: np.ndarray, count: int = 400) -> np.ndarray:
    return np.unique(np.concatenate([[0.0], np.quantile(top, np.linspace(0, 1, count))]))


def tradeoff_curve(
    probs: np.ndarray,
    y_true: np.ndarray,
    labels: tuple[str, ...],
    reject_label: str,
    thresholds: np.ndarray | None = None,
) -> list[CurvePoint]:
    top = probs.max(axis=1)
    thresholds = _candidates(top) if thresholds is None else thresholds
    reject = labels.index(reject_label) if reject_label in labels else -1
    in_scope = y_true != reject
    points = []
    for t in thresholds:
        pred, _ = DecisionRule(labels, float(t), reject_label).decide(probs)
        answered = pred != reject
        points.append(
            CurvePoint(
                threshold=float(t),
                in_scope_accuracy=float((pred[in_scope] == y_true[in_scope]).mean())
                if in_scope.any()
                else float("nan"),
                oos_recall=float((pred[~in_scope] == reject).mean()) if (~in_scope).any() else float("nan"),
                coverage=float(answered.mean()),
            )
        )
    return points


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    policy: str
    reason: str


def resolve_policy(config: ThresholdConfig, train_labels: set[str], validation_labels: list[str]) -> str:
    if config.policy != "auto":
        return config.policy
    has_oos = config.reject_label in train_labels and config.reject_label in validation_labels
    return "target_oos_recall" if has_oos else "none"


def choose_threshold(
    config: ThresholdConfig, policy: str, probs: np.ndarray, y_true: np.ndarray, labels: tuple[str, ...]
) -> ThresholdChoice:
    if policy == "none":
        return ThresholdChoice(0.0, policy, "no threshold: the top label always answers")
    if policy == "fixed":
        return ThresholdChoice(config.value, policy, f"fixed at {config.value}")
    top = probs.max(axis=1)
    if policy == "coverage":
        t = float(np.quantile(top, 1.0 - config.target)) if config.target < 1 else 0.0
        return ThresholdChoice(t, policy, f"answers {config.target:.0%} of validation rows")
    if config.reject_label not in labels or config.reject_label not in {labels[i] for i in y_true}:
        raise ValueError(f"policy {policy!r} needs validation rows labelled {config.reject_label!r}")
    curve = tradeoff_curve(probs, y_true, labels, config.reject_label)
    if policy == "max_balanced":
        best = max(curve, key=lambda p: (p.in_scope_accuracy + p.oos_recall, -p.threshold))
        return ThresholdChoice(best.threshold, policy, "best mean of in-scope accuracy and oos recall on validation")
    if policy == "target_oos_recall":
        reaching = [p for p in curve if p.oos_recall >= config.target]
        if not reaching:
            best = max(curve, key=lambda p: p.oos_recall)
            return ThresholdChoice(
                best.threshold,
                policy,
                f"validation oos recall never reaches {config.target}; highest is {best.oos_recall:.3f}",
            )
        best = max(reaching, key=lambda p: (p.in_scope_accuracy, -p.threshold))
        return ThresholdChoice(
            best.threshold, policy, f"best validation in-scope accuracy with oos recall >= {config.target}"
        )
    raise ValueError(f"unknown threshold policy {policy!r}")  # pragma: no cover - config validates it
