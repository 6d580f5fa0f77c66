"""The demo datasets under heads/demo/ (trained by `make run` at first start) are well formed:
every split parses, labels are shared and well supported, no text repeats anywhere, and each
config loads and points at files that exist. Fast: no model is loaded."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from heads.config import load_config
from heads.data import read_file

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "heads" / "demo"
DEMO_MODELS = ("email-replies", "support-tickets", "news-topics")
SPLITS = ("train", "validation", "test")
MIN_PER_LABEL = {"train": 40, "validation": 10, "test": 10}


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def test_every_demo_folder_is_checked():
    folders = sorted(p.name for p in DEMO.iterdir() if p.is_dir())
    assert folders == sorted(DEMO_MODELS)


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_splits_parse_and_labels_are_supported(name):
    splits = {split: read_file(DEMO / name / f"{split}.csv") for split in SPLITS}
    train_labels = set(splits["train"].labels)
    for split, data in splits.items():
        assert set(data.labels) <= train_labels, f"{name}/{split}: labels missing from train"
        counts = Counter(data.labels)
        assert set(counts) == train_labels, f"{name}/{split}: some train labels have no {split} examples"
        thin = {label: n for label, n in counts.items() if n < MIN_PER_LABEL[split]}
        assert not thin, f"{name}/{split}: too few examples {thin}"


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_no_text_repeats_within_or_across_splits(name):
    seen: dict[str, str] = {}
    repeats = []
    for split in SPLITS:
        for text in read_file(DEMO / name / f"{split}.csv").texts:
            key = normalized(text)
            if key in seen:
                repeats.append(f"{text!r} ({seen[key]} and {split})")
            seen.setdefault(key, split)
    assert not repeats, f"{name}: repeated texts: {repeats[:10]}"


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_config_loads_and_points_at_the_data(name):
    config = load_config(DEMO / name / "config.yaml")
    assert config.name == name
    for split in SPLITS:
        path = getattr(config.data, split)
        assert isinstance(path, str), f"{name}: data.{split} must be a file path"
        assert not Path(path).is_absolute(), f"{name}: data.{split} must be relative to the repository root"
        assert (ROOT / path).is_file(), f"{name}: data.{split} {path} does not exist"
        assert (ROOT / path).resolve() == (DEMO / name / f"{split}.csv").resolve()
