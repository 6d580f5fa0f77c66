"""Choosing among head families on the validation split."""

import json

import numpy as np
import pytest

from heads.calibration import Calibration, negative_log_likelihood
from heads.config import parse_config
from heads.errors import ConfigError
from heads.selection import Candidate, choose, train_and_select
from heads.threshold import ThresholdChoice
from heads.trainer import make_trainers

FAST = {"epochs": 30, "early_stopping_patience": 5, "batch_size": 64}


def candidate(family: str, **validation: float) -> Candidate:
    return Candidate(family, None, None, Calibration(), ThresholdChoice(0.0, "none", ""), validation, {})


def test_the_best_metric_wins_and_a_tie_goes_to_the_cheaper_family():
    best, why = choose([candidate("mlp", accuracy=0.91), candidate("logistic", accuracy=0.90)], "accuracy")
    assert best.family == "mlp" and "best validation accuracy: 0.9100 (against logistic 0.9000)" == why
    tied = [candidate("ensemble", accuracy=0.9), candidate("mlp", accuracy=0.9), candidate("logistic", accuracy=0.9)]
    best, why = choose(tied, "accuracy")
    assert best.family == "logistic" and "cheaper to serve" in why
    lower = [candidate("mlp", log_loss=0.30), candidate("ensemble", log_loss=0.25)]
    assert choose(lower, "log_loss")[0].family == "ensemble"  # lower is better


@pytest.mark.parametrize(
    ("ensemble", "chosen", "said"),
    [
        (0.946, "ensemble", "it leads the best other family by 0.0060, at least the 0.005 it needs"),
        (0.943, "mlp", "the ensemble leads it by 0.0030, under the 0.005 it needs to be kept for its serving cost"),
        (0.930, "mlp", "best validation accuracy: 0.9400"),
    ],
)
def test_the_ensemble_must_lead_by_the_margin_to_pay_for_its_serving_cost(ensemble, chosen, said):
    candidates = [
        candidate("mlp", accuracy=0.94),
        candidate("logistic", accuracy=0.92),
        candidate("ensemble", accuracy=ensemble),
    ]
    best, why = choose(candidates, "accuracy", 0.005)
    assert best.family == chosen and said in why
    worse = [candidate("mlp", log_loss=0.30), candidate("ensemble", log_loss=0.298)]  # lower is better
    assert choose(worse, "log_loss", 0.005)[0].family == "mlp"


def xor_data(n: int, seed: int):
    """Four classes by the signs of two coordinates, embedded in 8 dimensions with two noise
    classes overlapping: no linear model separates the XOR of the signs, a hidden layer does."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int) + 2 * (x[:, 2] > 0)
    return x, y


def test_selection_keeps_a_network_where_logistic_regression_cannot_fit():
    config = parse_config(
        {
            "name": "xor",
            "data": {"train": "unused.csv"},
            "model": {"hidden_layers": [32], "ensemble_members": 2},
            "selection": {"candidates": ["mlp", "logistic", "ensemble"]},
            "training": FAST,
        }
    )
    (x_train, y_train), (x_val, y_val) = xor_data(1000, 1), xor_data(300, 2)
    labels = ("a", "b", "c", "d")
    selection = train_and_select(config, make_trainers(config), x_train, y_train, x_val, y_val, labels, "none")
    scores = {c.family: c.validation["accuracy"] for c in selection.candidates}
    assert set(scores) == {"mlp", "logistic", "ensemble"} and selection.metric == "accuracy"
    assert scores["logistic"] < 0.7 < min(scores["mlp"], scores["ensemble"])  # XOR is beyond a linear model
    assert selection.chosen.family != "logistic"
    # the ensemble is kept only when it leads the best single family by selection.ensemble_margin
    lead = scores["ensemble"] - max(scores["mlp"], scores["logistic"])
    assert selection.chosen.family == ("ensemble" if lead >= config.selection.ensemble_margin and lead > 0 else "mlp")
    report = json.loads(json.dumps(selection.report()))
    assert report["chosen"] == selection.chosen.family and "validation accuracy" in report["reason"]
    assert [c["family"] for c in report["candidates"]] == ["mlp", "logistic", "ensemble"]
    ensemble = next(c for c in selection.candidates if c.family == "ensemble")
    mlp = next(c for c in selection.candidates if c.family == "mlp")
    assert ensemble.trained.head.weights[0].shape == (8, 2 * 32)  # two members side by side
    # its member 0 is the mlp candidate's network: the members were trained together, once
    np.testing.assert_array_equal(ensemble.trained.head.weights[0][:, :32], mlp.trained.head.weights[0])
    assert (
        mlp.trained.seconds == 0.0 and "member 0 of the ensemble" in report["candidates"][0]["settings"]["trained_as"]
    )
    for c in selection.candidates:  # calibrated: the fitted temperature is folded into what serves
        logits = c.calibration.logits(c.trained.head.logits(x_val))
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(c.head.probabilities(x_val), expected / expected.sum(1, keepdims=True), atol=1e-5)
        # T minimises the validation log-loss, and T = 1 (no calibration) is among those tried
        before = negative_log_likelihood(c.trained.head.logits(x_val).astype(np.float64), y_val)
        assert c.validation["log_loss"] <= before + 1e-9


def test_by_default_auto_weighs_the_mlp_and_logistic_regression_and_trains_no_ensemble():
    config = parse_config({"name": "xor", "data": {"train": "unused.csv"}, "training": FAST})
    (x_train, y_train), (x_val, y_val) = xor_data(300, 1), xor_data(100, 2)
    trainers = make_trainers(config)
    assert list(trainers) == ["mlp", "logistic"]
    selection = train_and_select(config, trainers, x_train, y_train, x_val, y_val, ("a", "b", "c", "d"), "none")
    assert [c.family for c in selection.candidates] == ["mlp", "logistic"]
    mlp = selection.candidates[0]
    assert mlp.trained.seconds > 0 and "trained_as" not in mlp.settings  # trained alone, not as a member
    assert mlp.trained.head.weights[0].shape == (8, 512) and selection.chosen.family == "mlp"
    one = parse_config({"name": "xor", "data": {"train": "unused.csv"}, "selection": {"candidates": ["logistic"]}})
    alone = train_and_select(one, make_trainers(one), x_train, y_train, x_val, y_val, ("a", "b", "c", "d"), "none")
    assert alone.reason == "the only family trained (selection.candidates [logistic])"


@pytest.mark.parametrize("family", ["logistic", "mlp"])
def test_a_pinned_family_is_the_only_candidate(family):
    raw = {"name": "xor", "data": {"train": "unused.csv"}, "model": {"type": family}, "training": FAST}
    config = parse_config(raw)
    (x_train, y_train), (x_val, y_val) = xor_data(300, 1), xor_data(100, 2)
    trainers = make_trainers(config)
    assert list(trainers) == [family]
    selection = train_and_select(config, trainers, x_train, y_train, x_val, y_val, ("a", "b", "c", "d"), "none")
    assert [c.family for c in selection.candidates] == [family] and selection.chosen.family == family
    assert "the only family trained" in selection.reason
    layers = len(selection.chosen.head.weights)
    assert layers == (1 if family == "logistic" else 2)


@pytest.mark.parametrize(
    ("method", "fitted"),
    [
        ("auto", "temperature_reject_shift"),
        ("temperature_reject_shift", "temperature_reject_shift"),
        ("temperature", "temperature"),
    ],
)
def test_the_reject_class_gets_its_shift_where_validation_has_its_rows(method, fitted):
    raw = {"name": "xor", "data": {"train": "unused.csv"}, "model": {"type": "logistic"}, "training": FAST}
    config = parse_config({**raw, "calibration": {"method": method}})
    (x_train, y_train), (x_val, y_val) = xor_data(300, 1), xor_data(200, 2)
    labels = ("a", "b", "c", "oos")
    selection = train_and_select(
        config, make_trainers(config), x_train, y_train, x_val, y_val, labels, "target_oos_recall"
    )
    chosen = selection.chosen
    assert chosen.calibration.method == fitted
    report = selection.report()["candidates"][0]
    if fitted == "temperature_reject_shift":
        assert chosen.calibration.reject == 3 and chosen.calibration.reject_shift != 0.0
        assert report["reject_shift"] == round(chosen.calibration.reject_shift, 4)
    else:
        assert chosen.calibration.reject is None and "reject_shift" not in report
    # what serves is the calibrated logits, and their log-loss is what validation reports
    logits = chosen.trained.head.logits(x_val)
    expected = np.exp(chosen.calibration.logits(logits))
    np.testing.assert_allclose(chosen.head.probabilities(x_val), expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert chosen.validation["log_loss"] == pytest.approx(
        negative_log_likelihood(chosen.calibration.logits(logits), y_val)
    )


def test_auto_calibration_without_reject_rows_is_temperature_and_the_shift_cannot_be_forced():
    raw = {"name": "xor", "data": {"train": "unused.csv"}, "model": {"type": "logistic"}, "training": FAST}
    (x_train, y_train), (x_val, y_val) = xor_data(300, 1), xor_data(200, 2)
    keep = y_val != 3  # no validation row of the reject label
    labels = ("a", "b", "c", "oos")
    auto = parse_config(raw)
    chosen = train_and_select(auto, make_trainers(auto), x_train, y_train, x_val[keep], y_val[keep], labels, "none")
    assert chosen.chosen.calibration.method == "temperature"
    forced = parse_config({**raw, "calibration": {"method": "temperature_reject_shift"}})
    with pytest.raises(ConfigError, match="needs validation rows labelled 'oos'"):
        train_and_select(forced, make_trainers(forced), x_train, y_train, x_val[keep], y_val[keep], labels, "none")
