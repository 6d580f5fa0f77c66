"""Training the candidate head families and keeping the best, all on the validation split.

Each candidate (heads/trainer.py `make_trainers`) is trained, calibrated (its temperature fitted
on the validation logits and folded into its weights, heads/calibration.py), given the threshold
the threshold policy chooses on its calibrated validation probabilities, and scored on validation
with that very rule. The best by `selection.metric` is kept; an exact tie goes to the family that
is cheaper to serve. The same validation rows also drive early stopping, so the chosen candidate's
validation scores are optimistic: the version's test figures are the ones to trust.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heads.calibration import (
    expected_calibration_error,
    fit_temperature,
    head_logits,
    negative_log_likelihood,
    with_temperature,
)
from heads.config import HeadConfig
from heads.decision import DecisionRule
from heads.errors import ConfigError
from heads.metrics import summary
from heads.network import DenseHead
from heads.ngram import NgramHead
from heads.threshold import ThresholdChoice, choose_threshold
from heads.trainer import KerasTrainer, NgramTrainer, TrainedHead

# Cheapest to serve first: what an exact tie of the selection metric falls back to.
SERVING_COST_ORDER = ("ngram", "logistic", "mlp", "ensemble")
LOWER_IS_BETTER = {"log_loss"}


@dataclass(frozen=True)
class Candidate:
    """One family, trained and calibrated, with its decision rule and its validation scores."""

    family: str
    trained: TrainedHead  # as trained: its head is not calibrated
    head: DenseHead | NgramHead  # calibrated: what would serve
    temperature: float
    threshold: ThresholdChoice
    validation: dict[str, float]  # accuracy, macro_f1, [in_scope_accuracy, oos_recall], log_loss, ece
    settings: dict  # how it was trained (layers, members, learning rate, ...)

    def report(self) -> dict:
        return {
            "family": self.family,
            "settings": self.settings,
            "validation": {k: round(v, 4) for k, v in self.validation.items()},
            "temperature": round(self.temperature, 4),
            "threshold": round(self.threshold.threshold, 4),
            "epochs": self.trained.epochs_run,
            "best_epoch": self.trained.best_epoch,
            "training_seconds": round(self.trained.seconds, 1),
        }


@dataclass(frozen=True)
class Selection:
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    metric: str
    reason: str

    @property
    def training_seconds(self) -> float:
        return sum(c.trained.seconds for c in self.candidates)

    def report(self) -> dict:
        """model_selection.json: every candidate's validation scores, the choice and why."""
        return {
            "metric": self.metric,
            "chosen": self.chosen.family,
            "reason": self.reason,
            "candidates": [c.report() for c in self.candidates],
        }

    def summary(self) -> dict:
        """The short form kept in metrics.json and the manifest."""
        return {
            "metric": self.metric,
            "chosen": self.chosen.family,
            "validation": {c.family: round(c.validation[self.metric], 4) for c in self.candidates},
        }


def calibrate(
    family: str,
    trained: TrainedHead,
    x_val,
    y_val: np.ndarray,
    labels: tuple[str, ...],
    config: HeadConfig,
    policy: str,
    settings: dict,
) -> Candidate:
    """Fit the temperature, choose the threshold on the calibrated probabilities, score on validation."""
    logits = head_logits(trained.head, x_val)
    temperature = fit_temperature(logits, y_val) if config.calibration.method == "temperature" else 1.0
    head = with_temperature(trained.head, temperature) if temperature != 1.0 else trained.head
    before = trained.head.probabilities(x_val)
    probs = head.probabilities(x_val)
    choice = choose_threshold(config.threshold, policy, probs, y_val, labels)
    reject_label = config.threshold.reject_label if choice.threshold > 0 else None
    decided, _ = DecisionRule(labels, choice.threshold, reject_label).decide(probs)
    scores = summary(y_val, decided, list(labels), config.threshold.reject_label)
    scores.pop("weighted_f1")
    scores["log_loss"] = negative_log_likelihood(logits, y_val, temperature)
    scores["ece_before"] = expected_calibration_error(before, y_val)
    scores["ece"] = expected_calibration_error(probs, y_val)
    return Candidate(family, trained, head, temperature, choice, scores, settings)


def resolve_metric(config: HeadConfig, candidates: list[Candidate]) -> str:
    metric = config.selection.metric
    has_in_scope = all("in_scope_accuracy" in c.validation for c in candidates)
    if metric == "auto":
        return "in_scope_accuracy" if has_in_scope else "accuracy"
    if metric == "in_scope_accuracy" and not has_in_scope:
        raise ConfigError(
            f"selection.metric in_scope_accuracy needs validation rows labelled {config.threshold.reject_label!r} "
            "and others"
        )
    return metric


def choose(candidates: list[Candidate], metric: str) -> tuple[Candidate, str]:
    """The best candidate by `metric` (ties to the cheaper family), and why."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best = max(candidates, key=lambda c: (sign * c.validation[metric], -SERVING_COST_ORDER.index(c.family)))
    if len(candidates) == 1:
        return best, f"the only family trained (model.type {best.family})"
    others = ", ".join(f"{c.family} {c.validation[metric]:.4f}" for c in candidates if c is not best)
    tied = [c.family for c in candidates if c is not best and c.validation[metric] == best.validation[metric]]
    why = f"best validation {metric}: {best.validation[metric]:.4f} (against {others})"
    return best, why + (f"; tied with {', '.join(tied)}, and cheaper to serve" if tied else "")


def train_and_select(
    config: HeadConfig,
    trainers: dict[str, KerasTrainer | NgramTrainer],
    x_train,
    y_train: np.ndarray,
    x_val,
    y_val: np.ndarray,
    labels: tuple[str, ...],
    policy: str,
) -> Selection:
    candidates: list[Candidate] = []
    for family, trainer in trainers.items():
        if family == "ensemble" and "mlp" in trainers:  # its member 0 is the "mlp" candidate's network
            first = next(c.trained for c in candidates if c.family == "mlp")
            trained = trainer.fit(x_train, y_train, x_val, y_val, len(labels), first_member=first)
        else:
            trained = trainer.fit(x_train, y_train, x_val, y_val, len(labels))
        settings = trainer.spec.describe() if isinstance(trainer, KerasTrainer) else {"family": family}
        if family == "ensemble" and "mlp" in trainers:
            settings["member_0"] = "the mlp candidate (its training_seconds count the other members only)"
        candidates.append(calibrate(family, trained, x_val, y_val, labels, config, policy, settings))
    metric = resolve_metric(config, candidates)
    chosen, reason = choose(candidates, metric)
    return Selection(chosen, tuple(candidates), metric, reason)
