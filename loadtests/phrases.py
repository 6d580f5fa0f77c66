"""Realistic phrases for benchmarks, and a Zipf sampler for repetitive traffic.

The cache makes repeated samples free, so a benchmark that replays a handful of phrases measures
the cache, not the model. Here phrases are real user utterances from the public intent datasets
in ../shared/datasets (CLINC150 and SNIPS, about 38,000 distinct texts), and repetition is explicit:
`ZipfSampler(phrases, exponent)` draws rank k with probability proportional to 1 / k**exponent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
SOURCES = (
    "clinc150/train.csv",
    "clinc150/validation.csv",
    "clinc150/test.csv",
    "snips/train.csv",
    "snips/test.csv",
)


def real_phrases(min_words: int = 3, max_words: int = 12, *, seed: int = 0, datasets: Path = DATASETS) -> list[str]:
    """Distinct dataset texts with min_words..max_words words, in a seeded random order."""
    seen: dict[str, None] = {}
    for source in SOURCES:
        path = datasets / source
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: benchmarks read ../shared/datasets beside the repository")
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                text = " ".join(row["text"].split())
                if min_words <= len(text.split()) <= max_words:
                    seen.setdefault(text, None)
    phrases = list(seen)
    np.random.default_rng(seed).shuffle(phrases)
    return phrases


class ZipfSampler:
    """Draws phrases with P(rank k) proportional to 1 / k**exponent (rank 1 = phrases[0])."""

    def __init__(self, phrases: list[str], exponent: float, *, seed: int = 0):
        if not phrases:
            raise ValueError("need at least one phrase")
        weights = 1.0 / np.arange(1, len(phrases) + 1) ** exponent
        self._p = weights / weights.sum()
        self._phrases = phrases
        self._rng = np.random.default_rng(seed)

    def draw(self, n: int) -> list[str]:
        return [self._phrases[i] for i in self._rng.choice(len(self._phrases), size=n, p=self._p)]


def traffic_mix(*, seed: int = 0, datasets: Path = DATASETS) -> list[str]:
    """Texts with the length spread of real traffic, none repeated: mostly single utterances
    (1-40 words), about one in eight a message of 2-4 utterances, and one in fifty a long one of
    8-24 utterances (roughly 70-200 words, up to and past the model's 256-token limit). Built
    from the dataset utterances, each used once, in a seeded order."""
    pool = real_phrases(1, 40, seed=seed, datasets=datasets)
    rng = np.random.default_rng(seed)
    texts, i = [], 0
    while i < len(pool):
        draw = rng.random()
        k = 1 if draw < 0.86 else int(rng.integers(2, 5)) if draw < 0.98 else int(rng.integers(8, 25))
        texts.append(" ".join(pool[i : i + k]))
        i += k
    return texts
