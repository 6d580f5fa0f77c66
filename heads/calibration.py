"""Calibrating a head's probabilities: temperature scaling, and how to measure calibration.

A head's probability should mean what it says: of the answers given with probability 0.9, nine in
ten should be right. Training with label smoothing (and early stopping on a smoothed loss) makes
heads under-confident; small data makes them over-confident. Temperature scaling divides the
logits by one number T, fitted on the validation split by minimising the negative log-likelihood
(Guo et al. 2017). It keeps every row's ranking of labels, so accuracy does not move.

Dividing the logits by T is dividing the last layer's weights and bias by T, so the temperature is
folded into the exported weights (`with_temperature`): serving runs the same forward pass, and a
version written before calibration existed loads and serves as it always did.

The expected calibration error (ECE) bins rows by their top probability into 15 equal-width bins
and averages |accuracy - mean confidence| over the bins, weighted by their share of rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from heads.network import DenseHead
from heads.ngram import NgramHead

ECE_BINS = 15
# The search interval of T: far outside anything a trained head needs (measured: 0.55-1.6), and
# bounded so that a degenerate validation split cannot produce zero or infinite weights.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.02, 50.0


def head_logits(head: DenseHead | NgramHead, inputs: np.ndarray | Sequence[str]) -> np.ndarray:
    """float64 [n, classes]: the logits of what the head scores (embeddings, or texts for an n-gram head)."""
    if isinstance(head, NgramHead):
        return np.asarray(head.logits(head.featurizer.features(list(inputs))), np.float64)
    return np.asarray(head.logits(inputs), np.float64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log p(true label) of softmax(logits / temperature)."""
    return float(-log_softmax(logits / temperature)[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, iterations: int = 80) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises the NLL of softmax(logits / T).

    The NLL is convex in 1/T, hence unimodal in log T: a golden-section search on log T finds its
    minimum to ~1e-15 of the interval in 80 steps, with no optimiser to install."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)
    for _ in range(iterations):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if negative_log_likelihood(logits, y, np.exp(left)) <= negative_log_likelihood(logits, y, np.exp(right)):
            high = right
        else:
            low = left
    return float(np.exp((low + high) / 2.0))


def with_temperature(head: DenseHead | NgramHead, temperature: float) -> DenseHead | NgramHead:
    """The same head with its logits divided by `temperature`, folded into its last layer."""
    scale = np.float32(1.0 / temperature)
    if isinstance(head, NgramHead):
        return dataclasses.replace(head, weights=head.weights * scale, bias=head.bias * scale)
    return dataclasses.replace(
        head,
        weights=(*head.weights[:-1], head.weights[-1] * scale),
        biases=(*head.biases[:-1], head.biases[-1] * scale),
    )


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    rows: int
    confidence: float  # mean top probability of the bin's rows (nan when empty)
    accuracy: float  # share of them whose top label is right (nan when empty)


def reliability_bins(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """Rows binned by top probability into `bins` equal-width bins of [0, 1] (each bin holds its
    upper edge; the first also holds 0)."""
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, top, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        rows = index == b
        out.append(
            ReliabilityBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                rows=int(rows.sum()),
                confidence=float(top[rows].mean()) if rows.any() else float("nan"),
                accuracy=float(correct[rows].mean()) if rows.any() else float("nan"),
            )
        )
    return out


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (share of rows) x |accuracy - mean confidence|, on the top label."""
    table = reliability_bins(probs, y, bins)
    total = sum(b.rows for b in table)
    return float(sum(b.rows / total * abs(b.accuracy - b.confidence) for b in table if b.rows))
