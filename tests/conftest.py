"""Shared fixtures. Paths to shared data are relative to the repository root (../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODEL_DIR = ROOT / "var" / "embedders" / "minilm-l6-v2"


@pytest.fixture(scope="session")
def reference() -> dict:
    """The all-MiniLM-L6-v2 reference vectors from ../shared/reference (required, never skipped)."""
    path = SHARED / "reference" / "minilm-l6-v2-reference.json"
    assert path.is_file(), f"{path} is missing: the tests expect ../shared beside the repository"
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def minilm():
    """The real default model, loaded once per test session through tensorflow_hub."""
    from embedder.encoder import load_encoder

    assert (MODEL_DIR / "saved_model.pb").is_file(), "run `make setup` to build the default model"
    return load_encoder(str(MODEL_DIR))


# A real PostgreSQL server per test session, and a fresh database per test (tests/pg_fixtures.py).
from tests.pg_fixtures import db, empty_db, migrated_template, postgres  # noqa: E402, F401


@pytest.fixture(scope="session")
def clinc_subset(tmp_path_factory):
    """12 CLINC150 intents + oos as train/validation/test CSVs (see tests/datasets.py)."""
    from tests.datasets import clinc_subset as build

    return build(tmp_path_factory.mktemp("clinc-subset"))
