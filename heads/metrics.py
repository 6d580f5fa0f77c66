"""Classification metrics with numpy: accuracy, weighted and macro F1, per-class precision /
recall / F1 / support, the confusion matrix, and the out-of-scope pair (in-scope accuracy and
out-of-scope recall, the standard CLINC150 metrics)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts. Predictions of -1 (rejected with no reject class) are dropped
    from the matrix but still count as errors in every metric."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    valid = y_pred >= 0
    np.add.at(matrix, (y_true[valid], y_pred[valid]), 1)
    return matrix


@dataclass(frozen=True)
class PerClass:
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> PerClass:
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = np.bincount(y_true, minlength=num_classes).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return PerClass(precision, recall, f1, support.astype(np.int64))


def summary(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], reject_label: str | None) -> dict:
    """The headline numbers, as plain floats."""
    stats = per_class(y_true, y_pred, len(labels))
    present = stats.support > 0
    out = {
        "accuracy": float((y_true == y_pred).mean()),
        "weighted_f1": float((stats.f1 * stats.support).sum() / stats.support.sum()),
        "macro_f1": float(stats.f1[present].mean()),
    }
    if reject_label is not None and reject_label in labels:
        reject = labels.index(reject_label)
        in_scope = y_true != reject
        if in_scope.any():
            out["in_scope_accuracy"] = float((y_pred[in_scope] == y_true[in_scope]).mean())
        if (~in_scope).any():
            out["oos_recall"] = float((y_pred[~in_scope] == reject).mean())
    return out


def top_confusions(matrix: np.ndarray, labels: list[str], n: int = 25) -> list[dict]:
    """The largest off-diagonal cells: which true label is most often taken for which."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    support = np.maximum(matrix.sum(axis=1), 1)
    cells = [(int(off[t, p]), off[t, p] / support[t], t, p) for t, p in zip(*np.nonzero(off))]
    cells.sort(key=lambda c: (-c[0], -c[1], labels[c[2]], labels[c[3]]))
    return [{"true": labels[t], "predicted": labels[p], "count": c, "rate": float(r)} for c, r, t, p in cells[:n]]
