"""The training pipeline end to end, with a deterministic embedder for speed; the real model is
used in test_cli.py."""

import json
import os

import numpy as np
import pytest

from heads.artifact import load_version, new_version_id, stage_version
from heads.config import HEAD_FAMILIES, FeedbackSource, parse_config
from heads.data import Dataset
from heads.errors import ArtifactError, ConfigError, DataError, RegistryError
from heads.manifest import Decision, Manifest
from heads.network import DenseHead
from heads.pipeline import load_source, load_splits, stratified_split, train_head
from heads.registry import ModelStore
from heads.threshold import choose_threshold
from tests.datasets import write_csv
from tests.fakes import HashTextEmbedder

FAST = {"epochs": 8, "early_stopping_patience": 3, "batch_size": 32}


def config(subset, name="intents", **extra):
    raw = {
        "name": name,
        "data": {"train": str(subset["train"]), "validation": str(subset["validation"]), "test": str(subset["test"])},
        "model": {"type": "mlp", "hidden_layers": [32]},
        "training": FAST,
    }
    raw.update(extra)
    return parse_config(raw)


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "models")


def train(subset, store, tmp_path, **kwargs):
    return train_head(
        config(subset, **kwargs.pop("extra", {})),
        store=store,
        cache_dir=tmp_path / "cache",
        embedder=HashTextEmbedder(),
        **kwargs,
    )


def test_a_version_is_complete_and_self_describing(clinc_subset, store, tmp_path):
    result = train(clinc_subset, store, tmp_path)
    for key in (
        "accuracy",
        "weighted_f1",
        "macro_f1",
        "in_scope_accuracy",
        "oos_recall",
        "n_train",
        "n_test",
        "version",
    ):
        assert key in result
    assert result["n_train"] == 13 * 30 and result["n_test"] == 13 * 15 and result["labels"] == 13
    folder = store.version_dir("intents", result["version"])
    names = {p.name for p in folder.iterdir()}
    assert {
        "manifest.json",
        "head.npz",
        "config.yaml",
        "metrics.json",
        "per_class.csv",
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "top_confusions.json",
        "threshold_tradeoff.png",
        "history.png",
        "history.json",
        "model_selection.json",
        "calibration.json",
        "reliability_diagram.png",
    } <= names
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["embedder"] == {
        "model_id": "hash-encoder@1#layers-4-6",  # the default features: 3 pooled layers of 32
        "name": "hash-encoder",
        "version": "1",
        "dim": 96,
    }
    assert manifest["data"]["train"]["sha256"] and manifest["training_config"]["training"]["epochs"] == 8
    assert manifest["decision"]["reject_label"] == "oos" and manifest["code_version"]
    architecture = manifest["architecture"]
    assert architecture == {
        "type": "mlp",
        "family": "mlp",
        "hidden_layers": [32],
        "members": 1,
        "activation": "relu",
        "dropout": 0.3,
        "temperature": architecture["temperature"],
        "reject_shift": architecture["reject_shift"],  # the data has oos rows in validation
    }
    assert architecture["temperature"] > 0 and result["temperature"] == round(architecture["temperature"], 4)
    assert result["calibration"] == "temperature_reject_shift"
    assert result["reject_shift"] == round(architecture["reject_shift"], 4)
    assert result["family"] == "mlp" and result["head_type"] == "mlp"
    for key in ("ece_before", "ece_after", "ece_validation_before", "ece_validation_after", "ece_floor"):
        assert 0 <= result[key] <= 1
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert Manifest.read(folder).to_dict() == manifest  # the type reads and writes the same JSON
    baseline = manifest["baseline"]  # for drift (inferencedb/monitoring_report.py)
    assert (
        sum(baseline["label_distribution"].values()) == result["n_train"] and len(baseline["centroid"]) == 96
    )  # in the features the head scores
    assert sum(baseline["confidence_histogram"]) == result["n_validation"] and baseline["reject_label"] == "oos"
    artifact = load_version(folder, expected_embedder="hash-encoder@1", expected_dim=32)
    assert artifact.labels == tuple(sorted(artifact.labels)) and len(artifact.labels) == 13
    assert not os.access(folder / "head.npz", os.W_OK) or os.geteuid() == 0  # files are read-only (root ignores modes)
    assert oct((folder / "head.npz").stat().st_mode & 0o222) == "0o0"


def test_first_version_serves_later_ones_wait_for_promotion(clinc_subset, store, tmp_path):
    first = train(clinc_subset, store, tmp_path)
    second = train(clinc_subset, store, tmp_path)
    assert first["serving"] and not second["serving"]
    assert store.serving_version("intents") == first["version"]
    assert store.versions("intents") == sorted([first["version"], second["version"]])
    third = train(clinc_subset, store, tmp_path, promote=True)
    assert store.serving_version("intents") == third["version"]
    assert [h["primary"] for h in store.serving("intents").history] == [first["version"]]


def test_same_seed_same_weights_and_embeddings_are_cached(clinc_subset, store, tmp_path):
    embedder = HashTextEmbedder()
    a = train_head(config(clinc_subset), store=store, cache_dir=tmp_path / "cache", embedder=embedder)
    calls = embedder.calls
    b = train_head(config(clinc_subset), store=store, cache_dir=tmp_path / "cache", embedder=embedder)
    assert embedder.calls == calls  # second run read every matrix from the disk cache
    wa = np.load(store.version_dir("intents", a["version"]) / "head.npz")
    wb = np.load(store.version_dir("intents", b["version"]) / "head.npz")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa.files)


def test_failed_runs_write_nothing_to_the_store(clinc_subset, store, tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [("one", "a"), ("two", "a"), ("three", "lonely")])
    with pytest.raises(DataError, match="'lonely'"):
        train_head(
            parse_config({"name": "bad", "data": {"train": str(bad)}}),
            store=store,
            cache_dir=tmp_path / "c",
            embedder=HashTextEmbedder(),
        )
    unknown = write_csv(tmp_path / "val.csv", [("x", "never-seen")])
    with pytest.raises(DataError, match="label\\(s\\) not in the training data: 'never-seen'"):
        train_head(
            config(clinc_subset, data={"train": str(clinc_subset["train"]), "validation": str(unknown)}),
            store=store,
            cache_dir=tmp_path / "c",
            embedder=HashTextEmbedder(),
        )
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_a_crash_while_writing_reports_leaves_no_staging(clinc_subset, store, tmp_path, monkeypatch):
    import heads.evaluation_report

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(heads.evaluation_report, "write_history", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        train(clinc_subset, store, tmp_path)
    assert [p.name for p in store.root.iterdir()] == []


def test_without_validation_a_stratified_split_is_used(clinc_subset, store, tmp_path):
    cfg = parse_config(
        {
            "name": "split",
            "data": {"train": str(clinc_subset["train"])},
            "model": {"type": "mlp", "hidden_layers": [16]},
            "training": FAST,
        }
    )
    result = train_head(cfg, store=store, cache_dir=tmp_path / "cache", embedder=HashTextEmbedder())
    assert result["n_validation"] == 13 * 3 and result["evaluated_on"] == "validation"


def test_stratified_split_keeps_every_label_in_train():
    data = Dataset(["a1", "a2", "b1", "b2", "b3", "b4"], ["a", "a", "b", "b", "b", "b"], "mem")
    train_part, val_part = stratified_split(data, 0.5, seed=1)
    assert sorted(set(train_part.labels)) == ["a", "b"] and sorted(val_part.labels) == ["a", "b", "b"]
    assert sorted(train_part.texts + val_part.texts) == sorted(data.texts)


def test_corrupt_partial_and_mismatched_versions_are_refused(clinc_subset, store, tmp_path):
    version = train(clinc_subset, store, tmp_path)["version"]
    folder = store.version_dir("intents", version)
    load_version(folder)  # intact
    weights = folder / "head.npz"
    weights.chmod(0o644)
    original = weights.read_bytes()
    weights.write_bytes(original[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="head.npz does not match its checksum"):
        load_version(folder)
    weights.write_bytes(original)
    (folder / "per_class.csv").chmod(0o644)
    (folder / "per_class.csv").unlink()
    with pytest.raises(ArtifactError, match="per_class.csv is missing"):
        load_version(folder)
    (folder / "per_class.csv").mkdir()  # a folder under a listed file's name is no file
    with pytest.raises(ArtifactError, match="per_class.csv is missing"):
        load_version(folder)
    (folder / "per_class.csv").rmdir()
    (folder / "per_class.csv").symlink_to(folder / "nowhere.csv")  # nor is a dangling link
    with pytest.raises(ArtifactError, match="per_class.csv is missing"):
        load_version(folder)
    (folder / "per_class.csv").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_version(tmp_path)


def test_listed_files_may_be_links_to_files(clinc_subset, store, tmp_path):
    # a store synced or deployed with links to the files (the files themselves elsewhere) loads
    version = train(clinc_subset, store, tmp_path)["version"]
    folder = store.version_dir("intents", version)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("head.npz", "per_class.csv"):
        (folder / name).rename(elsewhere / name)
        (folder / name).symlink_to(elsewhere / name)
    assert load_version(folder).labels


def test_embedder_mismatch_names_both_embedders(clinc_subset, store, tmp_path):
    version = train(clinc_subset, store, tmp_path)["version"]
    with pytest.raises(
        ArtifactError, match="trained with embedder hash-encoder@1#layers-4-6, but the running embedder is other@2"
    ):
        store.load("intents", version, expected_embedder="other@2")
    # The default features pool 3 layers: 3 x 32 floats from this embedder, 3 x 384 from MiniLM.
    with pytest.raises(
        ArtifactError, match=r"expects 96-d embeddings \(layers-4-6\), the running embedder gives 1152-d"
    ):
        store.load("intents", version, expected_dim=384)
    assert store.load("intents", version, expected_embedder="hash-encoder@1", expected_dim=32).version == version


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "Upper", "", "x" * 65, "a b"])
def test_unsafe_model_names_are_refused(store, name):
    with pytest.raises(RegistryError, match="invalid model name"):
        store.model_dir(name)


def test_unsafe_version_names_are_refused(store):
    with pytest.raises(RegistryError, match="invalid version"):
        store.version_dir("intents", "../../x")


def test_version_ids_sort_by_time():
    import datetime as dt

    early = new_version_id(dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC))
    late = new_version_id(dt.datetime(2026, 1, 2, 3, 4, 5, 7000, tzinfo=dt.UTC))
    assert early.startswith("20260102T030405006Z-") and early < late


def test_serving_pointer_refuses_a_bad_version_and_changes_the_fingerprint(clinc_subset, store, tmp_path):
    version = train(clinc_subset, store, tmp_path)["version"]
    before = store.fingerprint()
    with pytest.raises(RegistryError, match="has no version|invalid version"):
        store.load("intents", "20990101T000000000Z-ffff")
    with pytest.raises(RegistryError, match="has no version"):
        store.set_serving("intents", "20990101T000000000Z-ffff")
    assert store.serving_version("intents") == version
    store.set_serving("intents", version, reason="again")
    assert store.fingerprint() != before
    with pytest.raises(RegistryError, match="unknown model 'nothing'"):
        store.serving_version("nothing")


def test_sql_data_source_reads_the_inference_database(db, store, tmp_path, clinc_subset):
    import csv

    import psycopg2

    with open(clinc_subset["train"], newline="") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    conn = psycopg2.connect(db)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE corrected (utterance text, intent text)")
        cur.executemany("INSERT INTO corrected VALUES (%s, %s)", rows)
    conn.close()
    cfg = parse_config(
        {
            "name": "from-sql",
            "data": {"train": {"query": "SELECT utterance AS text, intent AS label FROM corrected", "dsn": db}},
            "model": {"type": "mlp", "hidden_layers": [16]},
            "training": FAST,
        }
    )
    result = train_head(cfg, store=store, cache_dir=tmp_path / "cache", embedder=HashTextEmbedder())
    assert result["n_train"] + result["n_validation"] == len(rows)
    broken = parse_config({"name": "broken", "data": {"train": {"query": "SELECT nope FROM corrected", "dsn": db}}})
    with pytest.raises(DataError, match="SQL query failed: .*nope"):
        train_head(broken, store=store, cache_dir=tmp_path / "cache", embedder=HashTextEmbedder())


def test_an_ngram_head_trains_without_any_embedder(clinc_subset, store, tmp_path, monkeypatch):
    import heads.pipeline

    def no_embedder(config):
        raise AssertionError("an n-gram head must not create an embedder")

    monkeypatch.setattr(heads.pipeline, "make_embedder", no_embedder)
    cfg = config(clinc_subset, name="fallback", model={"type": "ngram", "ngram_buckets": 4096})
    result = train_head(cfg, store=store, cache_dir=tmp_path / "cache")
    assert result["head_type"] == "ngram" and result["embedding_seconds"] == 0
    assert result["in_scope_accuracy"] > 0.5 and "oos_recall" in result and result["serving"]
    assert not (tmp_path / "cache").exists()
    folder = store.version_dir("fallback", result["version"])
    assert {"head.npz", "per_class.csv", "confusion_matrix.png", "threshold_tradeoff.png", "history.png"} <= {
        p.name for p in folder.iterdir()
    }
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["embedder"] is None
    assert manifest["architecture"] == {
        "type": "ngram",
        "scheme": "char-ngram-v1",
        "ngram_range": [2, 4],
        "buckets": 4096,
        "temperature": manifest["architecture"]["temperature"],
        "reject_shift": manifest["architecture"]["reject_shift"],  # an n-gram head is calibrated the same way
    }
    assert manifest["training_config"]["model"]["type"] == "ngram"
    assert manifest["training_config"]["training"]["learning_rate"] == 0.01
    artifact = store.load("fallback", expected_embedder="other@2", expected_dim=384)
    assert artifact.embedder_id is None and not artifact.needs_embeddings
    probs = artifact.predict_proba(texts=["what is my balance", "WHAT IS MY BALANCE "])
    np.testing.assert_array_equal(probs[0], probs[1])
    chosen, _ = artifact.rule.decide(probs)
    assert artifact.rule.label_of(int(chosen[0])) in artifact.labels


def test_feedback_without_a_tenant_is_that_of_the_store_trained_into(clinc_subset, tmp_path, monkeypatch):
    import heads.pipeline

    asked = []

    def read_sql(dsn, query, params, *, source):
        asked.append(params["tenant"])
        return Dataset(["zorblax the gizmo"], ["oos"], source)

    monkeypatch.setattr(heads.pipeline, "read_sql", read_sql)
    cfg = config(clinc_subset)
    assert len(load_source(FeedbackSource(model="intents", tenant="other"), cfg, tenant="acme")) == 1
    with pytest.raises(ConfigError, match="names no tenant"):
        load_source(FeedbackSource(model="intents"), cfg)
    raw = {"train": [str(clinc_subset["train"]), {"model": "intents"}], "validation": str(clinc_subset["validation"])}
    result = train_head(
        config(clinc_subset, data=raw),
        store=ModelStore.for_tenant(tmp_path / "models", "acme"),
        cache_dir=tmp_path / "cache",
        embedder=HashTextEmbedder(),
    )
    assert asked == ["other", "acme"] and result["n_train"] == 13 * 30 + 1


def test_auto_selects_calibrates_and_reports_every_candidate(clinc_subset, store, tmp_path):
    raw = {"model": {"hidden_layers": [32], "ensemble_members": 2}, "selection": {"candidates": list(HEAD_FAMILIES)}}
    result = train(clinc_subset, store, tmp_path, extra=raw)
    folder = store.version_dir("intents", result["version"])
    selection = json.loads((folder / "model_selection.json").read_text())
    assert [c["family"] for c in selection["candidates"]] == ["mlp", "logistic", "ensemble"]
    assert selection["metric"] == "in_scope_accuracy"  # the data has oos rows and the threshold rejects
    chosen = selection["chosen"]
    assert chosen == result["family"] and "best validation in_scope_accuracy" in selection["reason"]
    for c in selection["candidates"]:
        assert {"accuracy", "in_scope_accuracy", "oos_recall", "log_loss", "ece", "ece_before"} <= set(c["validation"])
        assert c["temperature"] > 0 and c["training_seconds"] >= 0
    scores = {c["family"]: c["validation"]["in_scope_accuracy"] for c in selection["candidates"]}
    assert scores[chosen] == max(scores.values()) and result["selection"]["validation"] == scores
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["architecture"]["family"] == chosen and manifest["metrics"]["family"] == chosen
    assert manifest["training_config"]["model"]["type"] == "auto"

    calibration = json.loads((folder / "calibration.json").read_text())
    assert calibration["method"] == "temperature_reject_shift" and calibration["temperature"] == result["temperature"]
    assert calibration["reject_shift"] == result["reject_shift"]
    for split in ("validation", "test"):
        for when in ("before", "after"):
            assert len(calibration["bins"][split][when]) == 15
            assert calibration[f"ece_{split}_{when}"] == result[f"ece_{split}_{when}".replace("_test", "")]
        assert 0 < calibration[f"ece_{split}_floor"] < 1  # the ECE a perfectly calibrated head would read
    assert result["ece_floor"] == calibration["ece_test_floor"]
    assert (folder / "reliability_diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The threshold that serves is the one the policy chooses on the served (calibrated) probabilities.
    artifact = load_version(folder)
    config_ = config(clinc_subset, **raw)
    splits = load_splits(config_)
    x_val = HashTextEmbedder().embed_chunk(splits.validation.texts, config_.model.features)
    y_val = np.array([artifact.labels.index(label) for label in splits.validation.labels])
    again = choose_threshold(
        config_.threshold, "target_oos_recall", artifact.predict_proba(x_val), y_val, artifact.labels
    )
    assert again.threshold == pytest.approx(manifest["decision"]["threshold"])


def test_the_default_auto_head_weighs_the_mlp_and_logistic_regression(clinc_subset, store, tmp_path):
    result = train(clinc_subset, store, tmp_path, extra={"model": {"hidden_layers": [32]}})
    folder = store.version_dir("intents", result["version"])
    selection = json.loads((folder / "model_selection.json").read_text())
    assert [c["family"] for c in selection["candidates"]] == ["mlp", "logistic"]
    assert all(c["training_seconds"] > 0 for c in selection["candidates"])  # each trained on its own
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["training_config"]["selection"]["candidates"] == ["mlp", "logistic"]
    assert manifest["architecture"]["family"] == result["family"] in ("mlp", "logistic")


def test_a_pinned_logistic_head_is_one_linear_layer(clinc_subset, store, tmp_path):
    result = train(clinc_subset, store, tmp_path, extra={"model": {"type": "logistic"}})
    folder = store.version_dir("intents", result["version"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["architecture"]["family"] == "logistic" and manifest["architecture"]["hidden_layers"] == []
    assert manifest["training_config"]["training"]["learning_rate"] == 0.01
    assert len(load_version(folder).head.weights) == 1
    assert [c["family"] for c in json.loads((folder / "model_selection.json").read_text())["candidates"]] == [
        "logistic"
    ]


def test_a_version_written_before_selection_and_calibration_serves_as_before(store, tmp_path):
    """A folder as earlier code wrote it: no family, no temperature, no new reports."""
    rng = np.random.default_rng(7)
    head = DenseHead(
        (rng.normal(size=(32, 16)).astype(np.float32), rng.normal(size=(16, 3)).astype(np.float32)),
        (rng.normal(size=16).astype(np.float32), rng.normal(size=3).astype(np.float32)),
        "relu",
    )
    staging = tmp_path / "old"
    staging.mkdir()
    (staging / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "head_type": "mlp"}))
    manifest = Manifest(
        model="old",
        version="20250101T000000000Z-0000",
        labels=("a", "b", "oos"),
        decision=Decision(0.5, "oos", "target_oos_recall", "old"),
        embedder=HashTextEmbedder().identity,
        architecture={"type": "mlp", "hidden_layers": [16], "activation": "relu", "dropout": 0.3},
        metrics={"accuracy": 0.9, "head_type": "mlp"},
    )
    stage_version(staging, head, manifest)
    artifact = load_version(staging, expected_embedder="hash-encoder@1", expected_dim=32)
    x = rng.normal(size=(20, 32)).astype(np.float32)
    # Not bit-equal: the version holds its weights column-major, `head` row-major, and BLAS may sum a
    # product in another order for each layout (an AVX-512 OpenBLAS kernel does, by a few float32 ulps).
    np.testing.assert_allclose(artifact.predict_proba(x), head.probabilities(x), rtol=1e-4, atol=1e-7)
    assert artifact.head_type == "mlp" and artifact.rule.threshold == 0.5
    assert json.loads((staging / "manifest.json").read_text())["architecture"] == manifest.architecture
