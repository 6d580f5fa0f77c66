"""Training the candidate head families and keeping the best, all on the validation split.

Each candidate (heads/trainer.py `make_trainers`) is trained, calibrated (its temperature, and
where the data has a reject class that class's shift, fitted on the validation logits and folded
into its weights, heads/calibration.py), given the threshold
the threshold policy chooses on its calibrated validation probabilities, and scored on validation
with that very rule. The best by `selection.metric` is kept; an exact tie goes to the family that
is cheaper to serve. The same validation rows also drive early stopping, so the chosen candidate's
validation scores are optimistic: the version's test figures are the ones to trust.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from heads.calibration import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    head_logits,
    negative_log_likelihood,
    with_calibration,
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
JOINTLY_TRAINED = "member 0 of the ensemble, trained with it in one model: its seconds are the ensemble's"


@dataclass(frozen=True)
class Candidate:
    """One family, trained and calibrated, with its decision rule and its validation scores."""

    family: str
    trained: TrainedHead  # as trained: its head is not calibrated
    head: DenseHead | NgramHead  # calibrated: what would serve
    calibration: Calibration
    threshold: ThresholdChoice
    validation: dict[str, float]  # accuracy, macro_f1, [in_scope_accuracy, oos_recall], log_loss, ece
    settings: dict  # how it was trained (layers, members, learning rate, ...)

    def report(self) -> dict:
        return {
            "family": self.family,
            "settings": self.settings,
            "validation": {k: round(v, 4) for k, v in self.validation.items()},
            **{k: v for k, v in self.calibration.describe().items() if k != "method"},
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


def resolve_calibration(config: HeadConfig, labels: tuple[str, ...], y_val: np.ndarray) -> str:
    """The calibration method that `calibration.method` means for this data: "auto" shifts the
    reject class where the validation split holds rows of it and of other labels."""
    method = config.calibration.method
    reject = config.threshold.reject_label
    present = set(np.unique(y_val).tolist())
    index = labels.index(reject) if reject in labels else None
    can_shift = index is not None and index in present and len(present) > 1
    if method == "auto":
        return "temperature_reject_shift" if can_shift else "temperature"
    if method == "temperature_reject_shift" and not can_shift:
        raise ConfigError(
            f"calibration.method temperature_reject_shift needs validation rows labelled {reject!r} and others"
        )
    return method


def calibrate(
    family: str,
    trained: TrainedHead,
    x_val,
    y_val: np.ndarray,
    labels: tuple[str, ...],
    config: HeadConfig,
    policy: str,
    settings: dict,
    method: str,
) -> Candidate:
    """Fit the calibration `method` (`resolve_calibration`), choose the threshold on the calibrated
    probabilities, score on validation."""
    logits = head_logits(trained.head, x_val)
    reject = labels.index(config.threshold.reject_label) if method == "temperature_reject_shift" else None
    calibration = fit_calibration(method, logits, y_val, reject)
    head = with_calibration(trained.head, calibration)
    before = trained.head.probabilities(x_val)
    probs = head.probabilities(x_val)
    choice = choose_threshold(config.threshold, policy, probs, y_val, labels)
    decided, _ = DecisionRule.serving(labels, choice.threshold, config.threshold.reject_label).decide(probs)
    scores = summary(y_val, decided, list(labels), config.threshold.reject_label)
    scores.pop("weighted_f1")
    scores["log_loss"] = negative_log_likelihood(calibration.logits(logits), y_val)
    scores["ece_before"] = expected_calibration_error(before, y_val)
    scores["ece"] = expected_calibration_error(probs, y_val)
    return Candidate(family, trained, head, calibration, choice, scores, settings)


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


def choose(
    candidates: list[Candidate], metric: str, ensemble_margin: float = 0.0, pinned: bool = True
) -> tuple[Candidate, str]:
    """The best candidate by `metric` (ties to the cheaper family), and why. The ensemble, which
    costs its members' weights and forward passes to serve, must beat the best other family by
    `ensemble_margin`."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def best_of(group: list[Candidate]) -> Candidate:
        return max(group, key=lambda c: (sign * c.validation[metric], -SERVING_COST_ORDER.index(c.family)))

    if len(candidates) == 1:
        given = f"model.type {candidates[0].family}" if pinned else f"selection.candidates [{candidates[0].family}]"
        return candidates[0], f"the only family trained ({given})"
    singles = [c for c in candidates if c.family != "ensemble"]
    ensemble = next((c for c in candidates if c.family == "ensemble"), None)
    best = best_of(singles) if singles else ensemble
    lead = sign * (ensemble.validation[metric] - best.validation[metric]) if ensemble and singles else 0.0
    if ensemble is not None and singles and lead >= ensemble_margin and lead > 0:
        best = ensemble
    others = ", ".join(f"{c.family} {c.validation[metric]:.4f}" for c in candidates if c is not best)
    why = f"best validation {metric}: {best.validation[metric]:.4f} (against {others})"
    if best is not ensemble and lead > 0:
        why = (
            f"validation {metric}: {best.family} {best.validation[metric]:.4f} (against {others}); the ensemble "
            f"leads it by {lead:.4f}, under the {ensemble_margin:g} it needs to be kept for its serving cost"
        )
    elif best is ensemble and ensemble_margin > 0:
        why += f"; it leads the best other family by {lead:.4f}, at least the {ensemble_margin:g} it needs"
    tied = [c.family for c in candidates if c is not best and c.validation[metric] == best.validation[metric]]
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
    method = resolve_calibration(config, labels, y_val)  # a config error before minutes of training
    trained: dict[str, TrainedHead] = {}
    settings: dict[str, dict] = {}
    for family, trainer in trainers.items():
        keras = isinstance(trainer, KerasTrainer)
        settings[family] = trainer.spec.for_rows(len(y_train)).describe() if keras else {"family": family}
        if family == "mlp" and "ensemble" in trainers:
            continue  # the ensemble's member 0, trained with it
        if family == "ensemble" and "mlp" in trainers:
            joint = trainer.fit_members(x_train, y_train, x_val, y_val, len(labels))
            trained["ensemble"] = joint.ensemble
            trained["mlp"] = dataclasses.replace(joint.members[0], seconds=0.0)
            settings["mlp"]["trained_as"] = JOINTLY_TRAINED
        else:
            trained[family] = trainer.fit(x_train, y_train, x_val, y_val, len(labels))
    candidates = [
        calibrate(family, trained[family], x_val, y_val, labels, config, policy, settings[family], method)
        for family in trainers
    ]
    metric = resolve_metric(config, candidates)
    chosen, reason = choose(candidates, metric, config.selection.ensemble_margin, config.model.type != "auto")
    return Selection(chosen, tuple(candidates), metric, reason)
