import numpy as np
import pytest

from heads.ensemble import merge_members
from heads.network import DenseHead


def member(rng, sizes) -> DenseHead:
    return DenseHead(
        tuple(rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes, sizes[1:])),
        tuple(rng.normal(size=b).astype(np.float32) for b in sizes[1:]),
        "relu",
    )


@pytest.mark.parametrize("sizes", [(10, 4), (10, 16, 4), (10, 16, 8, 4)])
def test_merged_members_give_the_mean_of_their_logits(sizes):
    rng = np.random.default_rng(len(sizes))
    members = [member(rng, sizes) for _ in range(3)]
    x = rng.normal(size=(40, 10)).astype(np.float32)
    merged = merge_members(members)
    expected = np.mean([m.logits(x) for m in members], axis=0)
    np.testing.assert_allclose(merged.logits(x), expected, atol=1e-5)
    hidden = [w.shape[1] for w in merged.weights[:-1]]
    assert hidden == [3 * s for s in sizes[1:-1]]  # the members side by side


def test_members_must_match():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="same layer sizes"):
        merge_members([member(rng, (10, 16, 4)), member(rng, (10, 8, 4))])
    with pytest.raises(ValueError, match="at least one"):
        merge_members([])
    only = member(rng, (10, 4))
    assert merge_members([only]) is only
