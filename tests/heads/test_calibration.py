"""Temperature scaling and the reject shift, their folding into the served weights, and the
calibration error."""

import numpy as np
import pytest

from heads.calibration import (
    Calibration,
    ece_noise_floor,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    fit_temperature_and_reject_shift,
    head_logits,
    negative_log_likelihood,
    reliability_bins,
    with_calibration,
)
from heads.network import DenseHead, softmax
from heads.ngram import NgramFeaturizer, NgramHead


def dense_head(rng, sizes=(12, 16, 5), activation="gelu") -> DenseHead:
    return DenseHead(
        tuple(rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes, sizes[1:])),
        tuple(rng.normal(size=b).astype(np.float32) for b in sizes[1:]),
        activation,
    )


@pytest.mark.parametrize("temperature", [0.4, 1.7])
def test_a_folded_temperature_serves_softmax_of_logits_over_t(temperature):
    rng = np.random.default_rng(3)
    head = dense_head(rng)
    x = rng.normal(size=(50, 12)).astype(np.float32)
    folded = with_calibration(head, Calibration("temperature", temperature))
    expected = softmax(head.logits(x).astype(np.float64) / temperature)
    np.testing.assert_allclose(folded.probabilities(x), expected, atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(folded.weights[:-1], head.weights[:-1]))  # hidden layers untouched
    assert (folded.probabilities(x).argmax(axis=1) == head.probabilities(x).argmax(axis=1)).all()


def test_a_folded_temperature_on_an_ngram_head():
    rng = np.random.default_rng(4)
    featurizer = NgramFeaturizer((2, 3), 256)
    head = NgramHead(featurizer, rng.normal(size=(256, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32))
    texts = ["refund my order", "where is my parcel", "reset password"]
    folded = with_calibration(head, Calibration("temperature", 2.5))
    np.testing.assert_allclose(folded.probabilities(texts), softmax(head_logits(head, texts) / 2.5), atol=1e-6)


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=4.0, size=(20_000, 6))
    true_temperature = 2.0  # the labels follow softmax(logits / 2): the raw logits are over-confident
    probs = softmax(logits / true_temperature)
    y = (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)
    fitted = fit_temperature(logits, y)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert negative_log_likelihood(logits, y, fitted) < negative_log_likelihood(logits, y, 1.0)
    before = expected_calibration_error(softmax(logits), y)
    after = expected_calibration_error(softmax(logits / fitted), y)
    assert before > 0.1 and after < 0.02


def sampled_labels(rng, probs: np.ndarray) -> np.ndarray:
    return (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)


def test_fit_temperature_and_reject_shift_recovers_both():
    # The labels follow softmax(logits / 1.6 + 2.5 at column 0): the head under-rates its reject
    # class, as a head trained on few out-of-scope examples does, and is over-confident.
    rng = np.random.default_rng(6)
    logits = rng.normal(scale=4.0, size=(40_000, 6))
    truth = Calibration("temperature_reject_shift", 1.6, 0, 2.5)
    y = sampled_labels(rng, softmax(truth.logits(logits)))
    fitted = fit_temperature_and_reject_shift(logits, y, 0)
    assert fitted.temperature == pytest.approx(1.6, rel=0.05) and fitted.reject_shift == pytest.approx(2.5, abs=0.1)
    assert fitted.reject == 0 and fitted.method == "temperature_reject_shift"
    # Temperature alone cannot say it: its best fit leaves both the log-loss and the ECE higher.
    alone = fit_temperature(logits, y)
    assert negative_log_likelihood(fitted.logits(logits), y) < negative_log_likelihood(logits, y, alone) - 0.01
    ece_alone = expected_calibration_error(softmax(logits / alone), y)
    ece_both = expected_calibration_error(softmax(fitted.logits(logits)), y)
    assert ece_both < 0.01 < ece_alone


def test_the_reject_shift_is_never_worse_than_temperature_alone():
    # Labels that need no shift: the fit finds about 0, and T is where temperature alone puts it.
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=3.0, size=(20_000, 5))
    y = sampled_labels(rng, softmax(logits / 0.7))
    fitted = fit_temperature_and_reject_shift(logits, y, 2)
    assert abs(fitted.reject_shift) < 0.1 and fitted.temperature == pytest.approx(fit_temperature(logits, y), rel=0.02)
    assert negative_log_likelihood(fitted.logits(logits), y) <= negative_log_likelihood(
        logits, y, fit_temperature(logits, y)
    )


def test_a_head_that_knows_nothing_keeps_t_at_its_bound_and_the_shift_fits_the_reject_share():
    # Logits unrelated to the labels: the best T is the largest allowed (every row near uniform),
    # and the shift alone makes the reject class as frequent as it is: half the rows, against
    # a sixth for each of the three others, is a shift of log 3.
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(30_000, 4))
    y = np.where(rng.random(30_000) < 0.5, 0, rng.integers(1, 4, 30_000))
    fitted = fit_temperature_and_reject_shift(logits, y, 0)
    assert fitted.temperature == pytest.approx(50.0, rel=1e-6)
    assert fitted.reject_shift == pytest.approx(np.log(3.0), abs=0.05)


def test_an_optimum_beyond_the_smallest_temperature_puts_t_at_that_bound():
    # Every row right by a margin of 0.2: the log-loss falls as T does, down to MIN_TEMPERATURE,
    # and the shift is fitted there (not where T stood when the bound was first in the way).
    rng = np.random.default_rng(11)
    y = np.where(np.arange(200) < 20, 0, rng.integers(1, 5, 200))
    logits = 0.2 * np.eye(5)[y] + rng.normal(scale=1e-3, size=(200, 5))
    fitted = fit_temperature_and_reject_shift(logits, y, 0)
    assert fitted.temperature == pytest.approx(0.02, rel=1e-6)
    best_at_bound = min(
        negative_log_likelihood(Calibration("x", 0.02, 0, shift).logits(logits), y) for shift in np.linspace(-5, 5, 201)
    )
    assert negative_log_likelihood(fitted.logits(logits), y) <= best_at_bound + 1e-6


def test_saturated_probabilities_still_get_their_shift():
    # Logits of 10,000: at the largest T every probability is 0 or 1, the Hessian all but zero.
    # The in-scope rows are right by 10,000 (200 at T = 50) over the reject class; the reject rows
    # are wrong by 5,000 (100 at T = 50). Any shift between 100 and 200 gets every row right.
    y = np.array([0] * 10 + [1, 2, 3] * 30)
    logits = 1e4 * np.eye(4)[y]
    logits[y == 0] = 5e3 * np.eye(4)[1]
    fitted = fit_temperature_and_reject_shift(logits, y, 0)
    assert 100 < fitted.reject_shift < 200 and fitted.temperature == pytest.approx(50.0)
    assert negative_log_likelihood(fitted.logits(logits), y) < 1e-3


def test_a_reject_shift_needs_rows_of_the_reject_class_and_of_others():
    logits = np.random.default_rng(8).normal(size=(30, 3))
    for y in (np.array([1, 2] * 15), np.zeros(30, int)):
        with pytest.raises(ValueError, match="rows of the reject class and of others"):
            fit_temperature_and_reject_shift(logits, y, 0)
    with pytest.raises(ValueError, match="needs the reject class"):
        fit_calibration("temperature_reject_shift", logits, np.array([0, 1] * 15))
    assert fit_calibration("none", logits, np.array([0, 1] * 15)) == Calibration()


@pytest.mark.parametrize("kind", ["dense", "ngram"])
def test_a_folded_reject_shift_serves_the_calibrated_logits(kind):
    rng = np.random.default_rng(9)
    calibration = Calibration("temperature_reject_shift", 0.6, 1, -1.3)
    if kind == "dense":
        head = dense_head(rng)
        x = rng.normal(size=(50, 12)).astype(np.float32)
    else:
        head = NgramHead(
            NgramFeaturizer((2, 3), 256),
            rng.normal(size=(256, 5)).astype(np.float32),
            rng.normal(size=5).astype(np.float32),
        )
        x = ["refund my order", "where is my parcel", "reset password"]
    folded = with_calibration(head, calibration)
    expected = softmax(calibration.logits(head_logits(head, x)))
    np.testing.assert_allclose(folded.probabilities(x), expected, atol=1e-5)
    assert not np.allclose(folded.probabilities(x), softmax(head_logits(head, x) / 0.6), atol=1e-3)
    assert with_calibration(head, Calibration()) is head


def test_ece_on_a_hand_checked_example():
    # four rows at confidence 0.95 (three right) and two at 0.55 (one right):
    # 4/6 * |0.75 - 0.95| + 2/6 * |0.5 - 0.55| = 0.15
    probs = np.array(
        [[0.95, 0.05], [0.95, 0.05], [0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]], dtype=np.float64
    )
    y = np.array([0, 0, 0, 1, 0, 0])
    assert expected_calibration_error(probs, y) == pytest.approx(0.15)
    table = reliability_bins(probs, y)
    assert len(table) == 15 and sum(b.rows for b in table) == 6
    full = [b for b in table if b.rows]
    assert [(b.rows, b.accuracy) for b in full] == [(2, 0.5), (4, 0.75)]
    assert full[1].low == pytest.approx(14 / 15) and full[1].confidence == pytest.approx(0.95)


def test_a_bin_holds_its_upper_edge():
    edges = np.linspace(0.0, 1.0, 16)
    tops = np.array([edges[14], 1.0, edges[8], 1.0])
    probs = np.stack([tops, 1 - tops], axis=1)
    table = reliability_bins(probs, np.array([0, 0, 0, 1]))
    assert [b.rows for b in table if b.rows] == [1, 1, 2]
    assert (
        table[7].rows == 1 and table[13].rows == 1 and table[14].rows == 2
    )  # (7/15, 8/15], (13/15, 14/15], (14/15, 1]


def test_the_ece_floor_is_what_a_perfectly_calibrated_head_reads_and_falls_with_rows():
    # Heads whose rows are right exactly as often as their top probability says: their measured
    # ECE scatters around the floor, which is large on 120 rows and small on 20,000.
    rng = np.random.default_rng(12)

    def calibrated_sample(rows: int):
        top = rng.uniform(0.4, 1.0, rows)
        probs = np.stack([top, (1 - top) / 2, (1 - top) / 2], axis=1)
        y = np.where(rng.random(rows) < top, 0, 1)
        return probs, y

    small, y_small = calibrated_sample(120)
    large, _ = calibrated_sample(20_000)
    floor_small, floor_large = ece_noise_floor(small), ece_noise_floor(large)
    assert 0.03 < floor_small < 0.12 and floor_large < 0.01
    assert ece_noise_floor(small) == floor_small  # seeded: the same rows give the same floor
    measured = [expected_calibration_error(*calibrated_sample(120)) for _ in range(200)]
    assert abs(np.median(measured) - floor_small) < 0.015
    # a miscalibrated head is well above its floor: right half as often as it says
    y_wrong = np.where(rng.random(120) < small[:, 0] / 2, 0, 1)
    assert expected_calibration_error(small, y_wrong) > 3 * floor_small
