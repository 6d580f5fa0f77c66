"""The character n-gram head: featurizer, numpy forward and training, artifact, config keys."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from heads.artifact import commit_version, load_version, stage_version
from heads.config import parse_config
from heads.embedding import EmbedderIdentity
from heads.errors import ArtifactError, ConfigError
from heads.manifest import Decision, Manifest
from heads.network import DenseHead
from heads.ngram import SCHEME, NgramFeaturizer, NgramHead, sparse_dot
from heads.trainer import NgramTrainer, cross_entropy, make_trainers, sparse_transpose_dot
from tests.conftest import ROOT

TEXTS = [
    "What's my checking account balance?",
    "book a table for two at 7pm",
    "Wie spät ist es in Zürich?",
    "a",
    "ça coûte combien, le café ?",
]


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def test_features_are_the_same_in_every_process():
    """The hash is arithmetic, never Python's salted hash(): another process (with another hash
    seed) puts every n-gram in the same bucket with the same sign."""
    code = (
        "import json, sys\n"
        "from heads.ngram import NgramFeaturizer\n"
        "rows = NgramFeaturizer((1, 5), 4096).features(json.loads(sys.stdin.read()))\n"
        "print(json.dumps([rows.indptr.tolist(), rows.indices.tolist(), rows.values.tolist()]))\n"
    )
    here = NgramFeaturizer((1, 5), 4096).features(TEXTS)
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            input=json.dumps(TEXTS),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert out.returncode == 0, out.stderr
        indptr, indices, values = json.loads(out.stdout)
        assert indptr == here.indptr.tolist() and indices == here.indices.tolist()
        np.testing.assert_array_equal(np.array(values, np.float32), here.values)


def test_the_hash_is_pinned():
    """Every saved n-gram head depends on these buckets: a change here needs a new SCHEME."""
    rows = NgramFeaturizer((2, 2), 1 << 15).features(["ab"])  # " a", "ab", "b "
    assert SCHEME == "char-ngram-v1"
    assert rows.indices.tolist() == [35, 6271, 15590]
    np.testing.assert_allclose(rows.values, np.array([-1, 1, -1], np.float32) / np.sqrt(3), rtol=1e-6)


def test_texts_the_embedder_would_merge_get_the_same_features():
    featurizer = NgramFeaturizer()
    variants = ["Book a TABLE\tfor two", "  book a table for   two\n", "book\u00a0a table for two"]
    dense = featurizer.features(variants).to_dense()
    assert np.array_equal(dense[0], dense[1]) and np.array_equal(dense[0], dense[2])
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert np.array_equal(*featurizer.features([nfc, nfd]).to_dense())
    assert not np.array_equal(*featurizer.features(["book a table", "book at able"]).to_dense())


def test_features_are_signed_sublinear_unit_rows_independent_of_the_batch():
    featurizer = NgramFeaturizer((1, 3), 1 << 12)
    rows = featurizer.features(TEXTS)
    dense = rows.to_dense()
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1, rtol=1e-6)
    assert (rows.values < 0).any() and (rows.values > 0).any()
    for i, text in enumerate(TEXTS):  # no n-gram spans two texts of a batch
        np.testing.assert_array_equal(featurizer.features([text]).to_dense()[0], dense[i])
    # " aaaaaa ": " " twice, "a" six times, "aa" five, "aaa" four, and " a", "a ", " aa", "aa " once:
    # each bucket holds log1p(count) before the row is scaled (2**20 buckets: no collisions).
    magnitudes = np.abs(NgramFeaturizer((1, 3), 1 << 20).features(["aaaaaa"]).values)
    expected = np.log1p([1, 1, 1, 1, 2, 4, 5, 6])
    np.testing.assert_allclose(np.sort(magnitudes), expected / np.linalg.norm(expected), rtol=1e-5)
    assert len(featurizer.features([])) == 0
    with pytest.raises(TypeError, match="not one string"):
        featurizer.features("one text")


def test_a_text_with_no_ngrams_scores_the_bias():
    featurizer = NgramFeaturizer((5, 6), 64)
    rows = featurizer.features(["a", "hello there"])  # " a " has no 5-gram
    assert rows.indptr[1] == 0 and rows.indptr[2] > 0
    head = NgramHead(featurizer, np.ones((64, 3), np.float32), np.array([0, 1, 2], np.float32))
    probs = head.probabilities(["a"])
    np.testing.assert_allclose(probs[0], np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum(), rtol=1e-6)


def test_sparse_products_equal_dense_ones():
    rng = np.random.default_rng(0)
    featurizer = NgramFeaturizer((5, 6), 512)
    rows = featurizer.features(["a", *TEXTS])  # the first row is empty
    dense = rows.to_dense()
    weights = rng.normal(size=(512, 7)).astype(np.float32)
    np.testing.assert_allclose(sparse_dot(rows, weights), dense @ weights, atol=1e-5)
    g = rng.normal(size=(len(rows), 7)).astype(np.float32)
    columns, grad = sparse_transpose_dot(rows, g)
    assert columns.tolist() == sorted(set(rows.indices.tolist()))
    np.testing.assert_allclose(grad, (dense.T @ g)[columns], atol=1e-5)
    picked = rows.take(np.array([3, 0, 3]))
    np.testing.assert_array_equal(picked.to_dense(), dense[[3, 0, 3]])


def test_the_gradient_is_the_gradient_of_the_served_loss():
    """What the trainer optimises is the loss of NgramHead's own forward pass."""
    rng = np.random.default_rng(1)
    featurizer = NgramFeaturizer((2, 3), 32)
    rows = featurizer.features(TEXTS)
    head = NgramHead(featurizer, rng.normal(size=(32, 4)).astype(np.float32), np.zeros(4, np.float32))
    targets = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]] * 0.9 + 0.1 / 4
    weights = np.array([1.0, 2.0, 0.5, 1.0, 1.0], np.float32)

    def loss() -> float:
        return float(cross_entropy(head.logits(rows).astype(np.float64), targets, weights)[0].mean())

    columns, grad = sparse_transpose_dot(rows, cross_entropy(head.logits(rows), targets, weights)[1])
    for c, k in [(columns[0], 0), (columns[3], 2), (columns[-1], 3)]:
        original = head.weights[c, k]
        head.weights[c, k] = original + 1e-2
        up = loss()
        head.weights[c, k] = original - 1e-2
        down = loss()
        head.weights[c, k] = original
        assert grad[list(columns).index(c), k] == pytest.approx((up - down) / 2e-2, rel=1e-2, abs=1e-5)


@pytest.fixture(scope="module")
def trained(clinc_subset):
    texts, labels = read_csv(clinc_subset["train"])
    val_texts, val_labels = read_csv(clinc_subset["validation"])
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels])
    y_val = np.array([names.index(label) for label in val_labels])
    config = parse_config(
        {
            "name": "ngram",
            "data": {"train": "unused.csv"},
            "model": {"type": "ngram", "ngram_buckets": 4096},
            "training": {"epochs": 15, "early_stopping_patience": 3},
        }
    )
    (trainer,) = make_trainers(config).values()
    assert isinstance(trainer, NgramTrainer) and not trainer.needs_embeddings
    return config, names, val_texts, y_val, trainer.fit(texts, y, val_texts, y_val, len(names))


def test_training_learns_and_is_deterministic(trained, clinc_subset):
    config, names, val_texts, y_val, result = trained
    assert result.history["val_accuracy"][result.best_epoch - 1] > 0.6
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    texts, labels = read_csv(clinc_subset["train"])
    y = np.array([names.index(label) for label in labels])
    again = NgramTrainer(config.model, config.training).fit(texts, y, val_texts, y_val, len(names))
    assert np.array_equal(again.head.weights, result.head.weights)
    other = dataclasses.replace(config.training, seed=14)
    moved = NgramTrainer(config.model, other).fit(texts, y, val_texts, y_val, len(names))
    assert not np.array_equal(moved.head.weights, result.head.weights)


def save(head, config, names, folder, threshold=0.0):
    staging = folder.parent / f".staging-{folder.name}"
    staging.mkdir(parents=True)
    manifest = Manifest(
        model="fallback",
        version=folder.name,
        labels=tuple(names),
        decision=Decision(threshold, "oos" if threshold else None),
        architecture={"type": "ngram", **head.featurizer.describe()},
        embedder=None,
    )
    stage_version(staging, head, manifest)
    commit_version(staging, folder)
    return folder


def test_the_saved_head_serves_what_training_optimised(trained, tmp_path):
    config, names, val_texts, _, result = trained
    folder = save(result.head, config, names, tmp_path / "v1")
    artifact = load_version(folder, expected_embedder="minilm@1", expected_dim=384)  # no embedder to mismatch
    assert artifact.manifest.architecture == {
        "type": "ngram",
        "scheme": SCHEME,
        "ngram_range": [2, 4],
        "buckets": 4096,
    }
    assert artifact.embedder_id is None and not artifact.needs_embeddings and artifact.head_type == "ngram"
    probs = artifact.predict_proba(texts=val_texts)
    assert probs.dtype == np.float32 and probs.shape == (len(val_texts), len(names))
    np.testing.assert_allclose(probs, result.validation_probabilities, atol=1e-5)
    both = artifact.predict_proba(np.zeros((len(val_texts), 384), np.float32), texts=val_texts)
    np.testing.assert_array_equal(both, probs)
    with pytest.raises(ValueError, match="n-gram head and scores texts"):
        artifact.predict_proba(np.zeros((1, 384), np.float32))


def test_a_corrupt_or_unknown_ngram_version_is_refused(trained, tmp_path):
    config, names, _, _, result = trained
    folder = save(result.head, config, names, tmp_path / "v1")
    weights = folder / "head.npz"
    weights.chmod(0o644)
    original = weights.read_bytes()
    weights.write_bytes(original[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="head.npz does not match its checksum"):
        load_version(folder)
    weights.write_bytes(original)
    manifest_path = folder / "manifest.json"
    manifest_path.chmod(0o644)
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "architecture": {**manifest["architecture"], "scheme": "v0"}}))
    with pytest.raises(ArtifactError, match="unknown n-gram feature scheme 'v0'"):
        load_version(folder)
    manifest_path.write_text(json.dumps({**manifest, "architecture": {**manifest["architecture"], "buckets": 8192}}))
    with pytest.raises(ArtifactError, match="4096 weight rows for 8192 buckets"):
        load_version(folder)
    manifest_path.write_text(json.dumps({**manifest, "architecture": {"type": "cnn"}}))
    with pytest.raises(ArtifactError, match="unknown head type 'cnn'"):
        load_version(folder)


@pytest.mark.parametrize("recorded_type", [True, False])
def test_mlp_heads_still_score_embeddings_positionally(tmp_path, recorded_type):
    """Versions written before "ngram" existed have no architecture type: they are "mlp"."""
    rng = np.random.default_rng(2)
    head = DenseHead((rng.normal(size=(8, 3)).astype(np.float32),), (np.zeros(3, np.float32),), "relu")
    staging = tmp_path / "staging"
    staging.mkdir()
    architecture = {"type": "mlp"} if recorded_type else {}
    manifest = Manifest(
        model="intents",
        version="v1",
        labels=("a", "b", "c"),
        decision=Decision(0.0),
        architecture={**architecture, "hidden_layers": [], "activation": "relu", "dropout": 0.0},
        embedder=EmbedderIdentity("enc@1", "enc", "1", 8),
    )
    stage_version(staging, head, manifest)
    commit_version(staging, tmp_path / "v1")
    artifact = load_version(tmp_path / "v1", expected_embedder="enc@1", expected_dim=8)
    assert artifact.head_type == "mlp" and artifact.needs_embeddings and artifact.embedder_id == "enc@1"
    vectors = rng.normal(size=(2, 8)).astype(np.float32)
    # the version holds its weights column-major: equal to `head` up to BLAS's summation order
    expected = head.probabilities(vectors)
    np.testing.assert_allclose(artifact.predict_proba(vectors), expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(artifact.predict_proba(vectors, texts=["x", "y"]), expected, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="scores sentence embeddings"):
        artifact.predict_proba(texts=["x"])
    with pytest.raises(ArtifactError, match="trained with embedder enc@1"):
        load_version(tmp_path / "v1", expected_embedder="other@2")


def test_config_keys_for_ngram_heads():
    base = {"name": "x", "data": {"train": "t.csv"}}
    config = parse_config({**base, "model": {"type": "ngram", "ngram_range": [1, 5], "ngram_buckets": 1024}})
    assert (config.model.type, config.model.ngram_range, config.model.ngram_buckets) == ("ngram", (1, 5), 1024)
    assert config.training.learning_rate == 0.01  # the n-gram default; mlp keeps 0.001
    assert parse_config(base).model.type == "auto" and parse_config(base).training.learning_rate is None
    assert (
        parse_config({**base, "model": {"type": "ngram"}, "training": {"learning_rate": 0.2}}).training.learning_rate
        == 0.2
    )
    for model, message in [
        ({"type": "cnn"}, "model.type: must be one of 'auto', 'mlp', 'logistic', 'ensemble', 'ngram'"),
        ({"type": "ngram", "ngram_range": [2]}, "model.ngram_range: expected 2 values"),
        ({"type": "ngram", "ngram_range": [2, "4"]}, "model.ngram_range[1]: expected an integer"),
        ({"type": "ngram", "ngram_range": [4, 2]}, "model.ngram_range must be [low, high] with 1 <= low <= high <= 8"),
        ({"type": "ngram", "ngram_range": [0, 2]}, "model.ngram_range must be [low, high]"),
        ({"type": "ngram", "ngram_buckets": 2.5}, "model.ngram_buckets: expected an integer"),
        ({"type": "ngram", "ngram_buckets": 0}, "model.ngram_buckets must be in [1, 16777216]"),
        ({"type": "ngram", "ngram_bucket": 10}, "unknown key(s) model.ngram_bucket"),
        ({"type": "ngram", "hidden_layers": [64]}, "model.hidden_layers does not apply to model.type 'ngram'"),
        ({"ngram_buckets": 1024}, "model.ngram_buckets does not apply to model.type 'auto'"),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_config({**base, "model": model})
        assert message in str(caught.value), (model, str(caught.value))


def test_serving_an_ngram_head_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import heads.ngram, heads.artifact\n"
        "f = heads.ngram.NgramFeaturizer()\n"
        "heads.ngram.NgramHead(f, np.zeros((f.buckets, 2), np.float32), np.zeros(2, np.float32)).probabilities(['hi'])\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'tf_keras', 'tensorflow_hub') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
