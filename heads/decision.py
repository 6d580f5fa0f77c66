"""From probabilities to answers: the operating threshold and the reject label.

Shared by evaluation (training) and the router (serving), so a reported metric is computed with
exactly the rule that serves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DecisionRule:
    labels: tuple[str, ...]
    threshold: float = 0.0  # below this top probability, answer reject_label
    reject_label: str | None = None

    def __post_init__(self) -> None:
        if self.threshold > 0 and not self.reject_label:
            raise ValueError("a threshold needs a reject label")

    @classmethod
    def serving(cls, labels: tuple[str, ...], threshold: float, reject_label: str) -> DecisionRule:
        """The rule a trained head serves with: the reject label is kept where the threshold can
        answer it or the head has it as a class. At threshold 0 such a head's argmax still answers
        it (with the calibrated reject shift, heads/calibration.py, that alone can reach the
        threshold policy's recall), and monitoring counts those answers as rejected."""
        keep = threshold > 0 or reject_label in labels
        return cls(labels, threshold, reject_label if keep else None)

    def decide(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(label index per row, its probability). A rejected row gets the reject label's index
        when the model has it as a class, else -1 (the caller maps -1 to `reject_label`)."""
        best = probs.argmax(axis=1)
        top = probs[np.arange(len(probs)), best]
        if self.threshold > 0:
            reject = self.labels.index(self.reject_label) if self.reject_label in self.labels else -1
            best = np.where(top < self.threshold, reject, best)
        return best, top

    def label_of(self, index: int) -> str:
        return self.reject_label if index < 0 else self.labels[index]
