import csv
from pathlib import Path

import numpy as np
import pytest

from heads.embedding import EmbedderIdentity
from tests.conftest import SHARED
from tests.fakes import HashEncoder


class HashTextEmbedder:
    """Deterministic stand-in for the embedder in pipeline logic tests."""

    def __init__(self, dim: int = 32):
        self.identity = EmbedderIdentity("hash-encoder@1", "hash-encoder", "1", dim)
        self.calls = 0

    def embed_chunk(self, texts):
        self.calls += 1
        return np.stack([HashEncoder.vector(t, self.identity.dim) for t in texts]).astype(np.float32)

    def close(self):
        pass


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def clinc_subset(tmp_path_factory):
    """A small slice of CLINC150 (12 intents + oos) as train/validation/test CSVs."""
    out = tmp_path_factory.mktemp("clinc-subset")
    splits = {}
    for split, per_label in (("train", 30), ("validation", 10), ("test", 15)):
        with open(SHARED / "datasets" / "clinc150" / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        intents = sorted({r["label"] for r in rows if r["label"] != "oos"})[:12] + ["oos"]
        picked, counts = [], {}
        for r in rows:
            if r["label"] in intents and counts.get(r["label"], 0) < per_label:
                counts[r["label"]] = counts.get(r["label"], 0) + 1
                picked.append((r["text"], r["label"]))
        splits[split] = write_csv(out / f"{split}.csv", picked)
    return splits
