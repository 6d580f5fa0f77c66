"""Paired outcomes from the held-out split: what each version answered, at training time, on the
items it was evaluated on, and the pairs of two versions' answers on the same items.

    <version>/heldout_predictions.json   (written by heads/pipeline.py, checksummed like every report)
    {"split": "test" | "validation", "items": [[text key, true label, served label], ...]}

The text key is the first 16 hex digits of the sha256 of the normalised text (embedder/normalize.py),
so the file holds no text; the served label is the answer after the decision rule (the reject
label included), exactly what a caller would have got. Two versions pair on the items with the
same text key and the same true label; an item that occurs k times in one file and m in the
other gives min(k, m) pairs. Pure Python: the router imports it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from embedder.normalize import normalize_text
from heads.release_gate import PairedCounts

HELDOUT_FILE = "heldout_predictions.json"
KEY_HEX_DIGITS = 16


def text_key(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:KEY_HEX_DIGITS]


def write_heldout(
    folder: Path, split: str, texts: Sequence[str], true_labels: Sequence[str], served_labels: Sequence[str]
) -> None:
    """Write a version's held-out answers into its (staging) folder."""
    items = [[text_key(t), y, served] for t, y, served in zip(texts, true_labels, served_labels, strict=True)]
    (Path(folder) / HELDOUT_FILE).write_text(json.dumps({"split": split, "items": items}))


def read_heldout(version_folder: Path) -> tuple[str, list] | str:
    """(split, items) of a version, or a string saying why there are none."""
    path = Path(version_folder) / HELDOUT_FILE
    try:
        data = json.loads(path.read_text())
        return str(data["split"]), [(str(k), str(y), str(s)) for k, y, s in data["items"]]
    except FileNotFoundError:
        return f"version {Path(version_folder).name} has no {HELDOUT_FILE} (trained before the gate existed)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{path} cannot be read ({exc})"


def heldout_pairs(primary_folder: Path, candidate_folder: Path) -> tuple[PairedCounts | str, dict]:
    """(the paired counts of two versions on their common held-out items, or why there are none;
    what the pairing found: the splits and the items of each file)."""
    primary, candidate = read_heldout(primary_folder), read_heldout(candidate_folder)
    for read in (primary, candidate):
        if isinstance(read, str):
            return read, {}
    (primary_split, primary_items), (candidate_split, candidate_items) = primary, candidate
    info = {
        "primary_split": primary_split,
        "candidate_split": candidate_split,
        "primary_items": len(primary_items),
        "candidate_items": len(candidate_items),
    }
    answers: dict[tuple[str, str], list[str]] = defaultdict(list)
    for key, truth, served in primary_items:
        answers[(key, truth)].append(served)
    outcomes = []
    for key, truth, served in candidate_items:
        waiting = answers.get((key, truth))
        if waiting:
            outcomes.append((waiting.pop(0) == truth, served == truth))
    if not outcomes:
        return "the two versions' held-out splits have no item in common (trained on different data)", info
    return PairedCounts.from_outcomes(outcomes), info
