"""Evaluation reports written into a version folder: per-class CSV, confusion matrix picture
with its top confusions, threshold trade-off curve, training history, model selection, and the
reliability diagram of the probabilities before and after calibration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from heads.calibration import ReliabilityBin
from heads.metrics import PerClass, top_confusions
from heads.threshold import CurvePoint


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_per_class_csv(path: Path, labels: list[str], stats: PerClass) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "precision", "recall", "f1", "support"])
        for i, label in enumerate(labels):
            writer.writerow(
                [label, f"{stats.precision[i]:.4f}", f"{stats.recall[i]:.4f}", f"{stats.f1[i]:.4f}", stats.support[i]]
            )


def write_confusion(directory: Path, matrix: np.ndarray, labels: list[str], title: str) -> None:
    """confusion_matrix.png (row-normalised, classes sorted by recall, worst first, with the top
    confusions listed beside it), confusion_matrix.csv (raw counts) and top_confusions.json."""
    plt = _pyplot()
    support = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, support, out=np.zeros(matrix.shape, float), where=support > 0)
    order = np.argsort(np.diag(normalised), kind="stable")
    sorted_matrix = normalised[np.ix_(order, order)]
    n = len(labels)
    confusions = top_confusions(matrix, labels, n=30)

    size = max(6.0, min(28.0, 0.16 * n + 4))
    fig = plt.figure(figsize=(size * 1.45, size))
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 0.45], wspace=0.05)
    ax = fig.add_subplot(grid[0])
    image = ax.imshow(sorted_matrix, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    font = max(3.0, min(9.0, 600 / max(n, 1)))
    ax.set_xticks(range(n), [labels[i] for i in order], rotation=90, fontsize=font)
    ax.set_yticks(range(n), [labels[i] for i in order], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (sorted by recall, worst first)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="share of true label")
    side = fig.add_subplot(grid[1])
    side.axis("off")
    lines = ["Top confusions (true -> predicted: count, rate)", ""]
    lines += [f"{c['true']} -> {c['predicted']}: {c['count']} ({c['rate']:.0%})" for c in confusions]
    side.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=max(7.0, font + 1), family="monospace")
    fig.savefig(directory / "confusion_matrix.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    with open(directory / "confusion_matrix.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *labels])
        for label, row in zip(labels, matrix):
            writer.writerow([label, *row.tolist()])
    (directory / "top_confusions.json").write_text(json.dumps(confusions, indent=2))


def write_tradeoff(directory: Path, validation: list[CurvePoint], test: list[CurvePoint] | None, chosen: float) -> None:
    """threshold_tradeoff.png + .json: in-scope accuracy against out-of-scope recall."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, curve, style in (("validation", validation, "-"), ("test", test, "--")):
        if curve:
            ax.plot([p.oos_recall for p in curve], [p.in_scope_accuracy for p in curve], style, label=name)
            point = min(curve, key=lambda p: abs(p.threshold - chosen))
            ax.plot(point.oos_recall, point.in_scope_accuracy, "o", color="black")
            ax.annotate(
                f"{name}: t={chosen:.3f}\n{point.in_scope_accuracy:.3f} / {point.oos_recall:.3f}",
                (point.oos_recall, point.in_scope_accuracy),
                textcoords="offset points",
                xytext=(8, -24 if name == "test" else 8),
                fontsize=8,
            )
    ax.set_xlabel("out-of-scope recall")
    ax.set_ylabel("in-scope accuracy")
    ax.set_title("Operating threshold trade-off (chosen point marked)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(directory / "threshold_tradeoff.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    payload = {
        "chosen_threshold": chosen,
        "validation": [p.__dict__ for p in validation],
        "test": [p.__dict__ for p in test] if test else None,
    }
    (directory / "threshold_tradeoff.json").write_text(json.dumps(payload))


def write_history(directory: Path, history: dict[str, list[float]]) -> None:
    plt = _pyplot()
    (directory / "history.json").write_text(json.dumps(history))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix in ("", "val_"):
            if prefix + key in history:
                ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], label=prefix + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(directory / "history.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_selection(directory: Path, report: dict) -> None:
    """model_selection.json: every candidate family's validation scores, the choice and why."""
    (directory / "model_selection.json").write_text(json.dumps(report, indent=2))


def write_reliability(directory: Path, diagrams: dict[str, dict[str, list[ReliabilityBin]]], summary: dict) -> None:
    """reliability_diagram.png (one panel per split: accuracy against mean confidence per bin,
    before and after calibration) and calibration.json (the bins, the method and its numbers, the ECEs).
    `diagrams`: split -> {"before": bins, "after": bins}."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(diagrams), figsize=(5.5 * len(diagrams), 5), squeeze=False)
    for ax, (split, curves) in zip(axes[0], diagrams.items()):
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
        for name, style in (("before", "o--"), ("after", "s-")):
            shown = [b for b in curves[name] if b.rows]
            ece = summary.get(f"ece_{split}_{name}")
            label = f"{name} calibration" + (f" (ECE {ece:.3f})" if ece is not None else "")
            ax.plot([b.confidence for b in shown], [b.accuracy for b in shown], style, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean top probability in bin")
        ax.set_ylabel("accuracy in bin")
        ax.set_title(f"{split} split, {len(curves['after'])} bins")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    shift = f", reject shift {summary['reject_shift']:+.3f}" if "reject_shift" in summary else ""
    fig.suptitle(f"Reliability (temperature {summary['temperature']:.3f}{shift})")
    fig.savefig(directory / "reliability_diagram.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    def bins(table: list[ReliabilityBin]) -> list[dict]:
        return [{**b.__dict__, **{k: None for k in ("confidence", "accuracy") if not b.rows}} for b in table]

    payload = {
        **summary,
        "bins": {split: {name: bins(table) for name, table in curves.items()} for split, curves in diagrams.items()},
    }
    (directory / "calibration.json").write_text(json.dumps(payload, indent=2))
