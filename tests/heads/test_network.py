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
