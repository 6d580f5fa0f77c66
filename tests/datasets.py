"""Small datasets for tests, cut from ../shared/datasets (read by path, never copied in)."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.conftest import SHARED


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def clinc_subset(out: Path, intents: int = 12) -> dict[str, Path]:
    """The first `intents` CLINC150 intents (alphabetically) plus oos, as train / validation /
    test CSVs of 30 / 10 / 15 rows per label."""
    splits = {}
    for split, per_label in (("train", 30), ("validation", 10), ("test", 15)):
        with open(SHARED / "datasets" / "clinc150" / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        chosen = sorted({r["label"] for r in rows if r["label"] != "oos"})[:intents] + ["oos"]
        picked, counts = [], {}
        for r in rows:
            if r["label"] in chosen and counts.get(r["label"], 0) < per_label:
                counts[r["label"]] = counts.get(r["label"], 0) + 1
                picked.append((r["text"], r["label"]))
        splits[split] = write_csv(out / f"{split}.csv", picked)
    return splits
