"""`python -m heads ...` as a data scientist runs it: real model, real files, real store."""

import json
import subprocess
import sys

import numpy as np

from heads.registry import ModelStore
from tests.conftest import ROOT


def heads(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "heads", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )


def test_train_with_flags_then_list_show_promote(clinc_subset, tmp_path):
    store = tmp_path / "store"
    out = heads(
        "train",
        "--name",
        "support-intents",
        "--train",
        str(clinc_subset["train"]),
        "--validation",
        str(clinc_subset["validation"]),
        "--test",
        str(clinc_subset["test"]),
        "--store",
        str(store),
        "--cache",
        str(tmp_path / "cache"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in (
        "accuracy",
        "weighted_f1",
        "macro_f1",
        "n_train",
        "n_test",
        "version",
        "in_scope_accuracy",
        "oos_recall",
    ):
        assert key in result, key
    assert result["in_scope_accuracy"] > 0.8  # 12 easy intents with the real encoder
    assert "embedding train" in out.stderr and "training" in out.stderr  # progress bars on stderr

    # The head answers as the numpy forward pass serves it, on the real encoder's vectors.
    from embedder.encoder import load_encoder
    from embedder.features import parse_features

    artifact = ModelStore(store / "default").load("support-intents")  # <store>/<tenant>/<model>
    encoder = load_encoder(str(ROOT / "var" / "embedders" / "minilm-l6-v2"))
    # Trained on the default features, pooled layers 4-6 (embedder/features.py), and named by them.
    assert artifact.embedder_id == f"{encoder.info.model_id}#layers-4-6"
    layers = encoder.embed_layers(["what is my account balance", "please transfer money to my savings"])
    probs = artifact.predict_proba(layers[:, parse_features("layers-4-6").columns(encoder.info.dim)])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    listing = json.loads(heads("list", "--store", str(store)).stdout)
    assert listing["models"] == [
        {"model": "support-intents", "versions": [result["version"]], "serving": result["version"]}
    ]
    shown = json.loads(heads("show", "support-intents", "--store", str(store)).stdout)
    assert shown["version"] == result["version"] and shown["decision"]["reject_label"] == "oos"
    bad = heads("promote", "support-intents", "20990101T000000000Z-0000", "--store", str(store))
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def test_bad_input_is_reported_without_traceback(tmp_path):
    missing = heads("train", "--name", "x", "--train", str(tmp_path / "nope.csv"), "--store", str(tmp_path / "s"))
    assert missing.returncode == 2 and "nope.csv: no such file" in missing.stderr and "Traceback" not in missing.stderr
    config = tmp_path / "c.yaml"
    config.write_text("name: x\ndata: {train: t.csv}\ntraining: {epochs: many}\n")
    typo = heads("train", "--config", str(config), "--store", str(tmp_path / "s"))
    assert typo.returncode == 2 and "training.epochs: expected an integer" in typo.stderr
    bad_name = heads("train", "--name", "../escape", "--train", str(config), "--store", str(tmp_path / "s"))
    assert bad_name.returncode == 2 and "invalid model name" in bad_name.stderr
    assert not (tmp_path / "s").exists()
    bad_tenant = heads("list", "--store", str(tmp_path / "s"), "--tenant", "../other")
    assert bad_tenant.returncode == 2 and "invalid tenant name" in bad_tenant.stderr


def test_embedder_and_seed_flags_apply_to_a_config_file(tmp_path):
    import argparse

    from heads.__main__ import _config_from_args

    config = tmp_path / "c.yaml"
    config.write_text("name: x\ndata:\n  train: train.csv\n")
    args = argparse.Namespace(
        config=str(config), name=None, train=None, validation=None, test=None, embedder="10.0.0.5:50051", seed=7
    )
    parsed = _config_from_args(args)
    assert parsed.embedder_address == "10.0.0.5:50051" and parsed.training.seed == 7
    plain = _config_from_args(argparse.Namespace(**{**vars(args), "embedder": "", "seed": None}))
    assert plain.embedder_address == "" and plain.training.seed == 13
