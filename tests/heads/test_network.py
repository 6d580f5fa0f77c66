import subprocess
import sys

import numpy as np
import pytest

from heads.config import TrainingConfig
from heads.members import export_members, member_weights
from heads.network import DenseHead, softmax
from heads.trainer import DenseSpec, KerasTrainer
from tests.conftest import ROOT


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid"])
def test_numpy_forward_equals_keras(activation):
    rng = np.random.default_rng(0)
    model = KerasTrainer(DenseSpec("mlp", (64, 32), activation, 0.2, 1, 0.001), TrainingConfig()).build(24, 7)
    x = rng.normal(size=(200, 24)).astype(np.float32) * 3
    (head,) = export_members(member_weights(model), activation)
    expected = softmax(np.asarray(model(x, training=False), np.float64)[:, 0])
    np.testing.assert_allclose(head.probabilities(x), expected, atol=1e-5)


def test_shapes_are_checked():
    w = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        DenseHead((w,), (np.zeros(4, np.float32),), "relu")
    with pytest.raises(ValueError, match="does not match previous output"):
        DenseHead((w, np.zeros((5, 2), np.float32)), (np.zeros(3, np.float32), np.zeros(2, np.float32)), "relu")
    with pytest.raises(ValueError, match="unknown activation"):
        DenseHead((w,), (np.zeros(3, np.float32),), "swish")


def test_serving_modules_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import heads.artifact, heads.registry, heads.network, heads.decision, embedder.client, embedder.normalize\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'tf_keras', 'tensorflow_hub') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_weights_are_written_column_major_and_old_row_major_files_serve_the_same(tmp_path):
    from heads.mapped_weights import load_weights, save_weights

    rng = np.random.default_rng(1)
    head = DenseHead(
        (rng.normal(size=(48, 16)).astype(np.float32), rng.normal(size=(16, 5)).astype(np.float32)),
        (rng.normal(size=16).astype(np.float32), rng.normal(size=5).astype(np.float32)),
        "gelu",
    )
    new, old = tmp_path / "new.npz", tmp_path / "old.npz"
    new.write_bytes(save_weights(head.arrays()))
    old.write_bytes(save_weights({k: np.ascontiguousarray(v) for k, v in head.arrays().items()}))  # before
    (new_arrays, new_map), (old_arrays, old_map) = load_weights(new), load_weights(old)
    assert new_map and old_map
    assert all(new_arrays[f"W{i}"].flags.f_contiguous and not new_arrays[f"W{i}"].flags.c_contiguous for i in (0, 1))
    assert all(old_arrays[f"W{i}"].flags.c_contiguous for i in (0, 1))
    x = rng.normal(size=(7, 48)).astype(np.float32)
    for batch in (x[:1], x):
        served_new = DenseHead.from_arrays(new_arrays, "gelu").probabilities(batch)
        served_old = DenseHead.from_arrays(old_arrays, "gelu").probabilities(batch)
        np.testing.assert_allclose(served_new, head.probabilities(batch), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(served_old, head.probabilities(batch), rtol=1e-5, atol=1e-7)
