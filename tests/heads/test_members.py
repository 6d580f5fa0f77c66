"""Ensemble members trained side by side as one Keras model (heads/members.py)."""

import numpy as np
import pytest

from heads.config import TrainingConfig
from heads.ensemble import merge_members
from heads.members import export_members, member_losses, member_weights, smoothed_targets
from heads.trainer import DenseSpec, KerasTrainer


def blobs(n: int, seed: int):
    """Five classes around random centres in 12 dimensions, overlapping enough that the
    validation loss keeps moving for a few epochs."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(5, 12))
    y = rng.integers(0, 5, size=n)
    return (centres[y] + rng.normal(scale=1.2, size=(n, 12))).astype(np.float32), y


def trainer(members: int, **training) -> KerasTrainer:
    config = TrainingConfig(**{"epochs": 6, "batch_size": 64, "seed": 3, **training})
    return KerasTrainer(DenseSpec("ensemble", (16,), "relu", 0.1, members, 0.01), config)


def test_members_differ_and_the_folded_head_is_the_mean_of_their_logits():
    (x, y), (x_val, y_val) = blobs(600, 1), blobs(200, 2)
    result = trainer(3, early_stopping_patience=0).fit_members(x, y, x_val, y_val, 5)
    heads = [m.head for m in result.members]
    assert len(heads) == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(heads[i].weights[0], heads[j].weights[0])  # own initial weights
    expected = np.mean([h.logits(x_val) for h in heads], axis=0)
    np.testing.assert_allclose(result.ensemble.head.logits(x_val), expected, atol=1e-5)
    # with no early stopping the Keras model holds the exported weights: its per-member logits
    # are the numpy heads', and their mean is what the folded head serves
    keras_logits = np.asarray(result.ensemble.keras_model(x_val, training=False))
    assert keras_logits.shape == (200, 3, 5)
    for j, head in enumerate(heads):
        np.testing.assert_allclose(head.logits(x_val), keras_logits[:, j], atol=1e-4)
    np.testing.assert_allclose(result.ensemble.head.logits(x_val), keras_logits.mean(axis=1), atol=1e-4)
    assert result.ensemble.head.weights[0].shape == (12, 3 * 16)


def test_each_member_keeps_the_weights_of_its_own_lowest_validation_loss():
    (x, y), (x_val, y_val) = blobs(600, 3), blobs(200, 4)
    result = trainer(2, epochs=12, early_stopping_patience=2, early_stopping_min_delta=0.0).fit_members(
        x, y, x_val, y_val, 5
    )
    targets = smoothed_targets(y_val, 5, 0.1)
    for member in result.members:
        history = member.history["val_loss"]
        assert member.best_epoch == int(np.argmin(history)) + 1
        kept = member_losses(member.head.logits(x_val)[:, None, :], targets)[0]
        assert kept == pytest.approx(history[member.best_epoch - 1], abs=1e-4)
        assert len(member.history["loss"]) == len(history) == member.epochs_run


def test_a_single_network_is_the_one_member_case():
    (x, y), (x_val, y_val) = blobs(300, 5), blobs(100, 6)
    result = trainer(1, epochs=3).fit_members(x, y, x_val, y_val, 5)
    assert result.ensemble is result.members[0]
    assert [w.shape for w in result.ensemble.head.weights] == [(12, 16), (16, 5)]


def test_export_gives_each_member_its_slice_of_every_layer():
    rng = np.random.default_rng(0)
    weights = [
        (rng.normal(size=(2, 4, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)),
        (rng.normal(size=(2, 3, 5)).astype(np.float32), rng.normal(size=(2, 5)).astype(np.float32)),
    ]
    heads = export_members(weights, "relu")
    x = rng.normal(size=(7, 4)).astype(np.float32)
    for j, head in enumerate(heads):
        hidden = np.maximum(x @ weights[0][0][j] + weights[0][1][j], 0)
        np.testing.assert_allclose(head.logits(x), hidden @ weights[1][0][j] + weights[1][1][j], atol=1e-5)
    np.testing.assert_allclose(merge_members(heads).logits(x), np.mean([h.logits(x) for h in heads], axis=0), atol=1e-5)


def test_member_weights_reads_every_member_layer_of_the_model():
    model = trainer(2).build(12, 5)
    shapes = [(k.shape, b.shape) for k, b in member_weights(model)]
    assert shapes == [((2, 12, 16), (2, 16)), ((2, 16, 5), (2, 5))]
