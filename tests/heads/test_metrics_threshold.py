import numpy as np
import pytest

from heads.config import ThresholdConfig
from heads.decision import DecisionRule
from heads.metrics import confusion_matrix, per_class, summary, top_confusions
from heads.threshold import choose_threshold, resolve_policy, tradeoff_curve

LABELS = ("a", "b", "oos")


def test_metrics_on_a_hand_checked_example():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    m = confusion_matrix(y_true, y_pred, 3)
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    stats = per_class(y_true, y_pred, 3)
    np.testing.assert_allclose(stats.precision, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(stats.recall, [2 / 3, 0.5, 1.0])
    f1 = np.array([0.8, 0.5, 2 / 3])
    np.testing.assert_allclose(stats.f1, f1)
    out = summary(y_true, y_pred, list(LABELS), "oos")
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["macro_f1"] == pytest.approx(f1.mean())
    assert out["weighted_f1"] == pytest.approx((f1 * [3, 2, 1]).sum() / 6)
    assert out["in_scope_accuracy"] == pytest.approx(3 / 5)
    assert out["oos_recall"] == 1.0
    assert top_confusions(m, list(LABELS)) == [  # by count, then by rate
        {"true": "b", "predicted": "oos", "count": 1, "rate": 0.5},
        {"true": "a", "predicted": "b", "count": 1, "rate": pytest.approx(1 / 3)},
    ]


def test_decision_rule_rejects_below_threshold():
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    pred, top = DecisionRule(LABELS, 0.5, "oos").decide(probs)
    assert pred.tolist() == [0, 2, 2] and top.tolist() == pytest.approx([0.9, 0.4, 0.8])
    no_reject_class = DecisionRule(("a", "b"), 0.5, "unknown")
    pred, _ = no_reject_class.decide(np.array([[0.45, 0.55], [0.3, 0.2]]))
    assert pred.tolist() == [1, -1] and no_reject_class.label_of(-1) == "unknown"
    with pytest.raises(ValueError, match="needs a reject label"):
        DecisionRule(LABELS, 0.5, None)


def _synthetic(n=600, seed=0):
    """In-scope rows are confident, out-of-scope rows are not: a threshold separates them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    probs = np.zeros((n, 3))
    for i, label in enumerate(y):
        if label == 2:
            top = rng.uniform(0.3, 0.6)
            probs[i] = [top, 1 - top - 0.05, 0.05]
        else:
            top = rng.uniform(0.5, 1.0)
            probs[i, label], probs[i, 1 - label], probs[i, 2] = top, (1 - top) / 2, (1 - top) / 2
    return probs, y


def test_target_oos_recall_policy_meets_its_target():
    probs, y = _synthetic()
    choice = choose_threshold(
        ThresholdConfig(policy="target_oos_recall", target=0.8), "target_oos_recall", probs, y, LABELS
    )
    point = min(tradeoff_curve(probs, y, LABELS, "oos"), key=lambda p: abs(p.threshold - choice.threshold))
    assert point.oos_recall >= 0.8
    assert 0.3 < choice.threshold < 0.7


def test_curve_is_monotone_in_oos_recall():
    probs, y = _synthetic()
    recalls = [p.oos_recall for p in tradeoff_curve(probs, y, LABELS, "oos")]
    assert recalls == sorted(recalls) and recalls[0] == 0.0 and recalls[-1] == 1.0


def test_other_policies():
    probs, y = _synthetic()
    coverage = choose_threshold(ThresholdConfig(policy="coverage", target=0.9), "coverage", probs, y, LABELS)
    assert (probs.max(axis=1) >= coverage.threshold).mean() == pytest.approx(0.9, abs=0.01)
    assert choose_threshold(ThresholdConfig(policy="fixed", value=0.42), "fixed", probs, y, LABELS).threshold == 0.42
    assert choose_threshold(ThresholdConfig(), "none", probs, y, LABELS).threshold == 0.0
    balanced = choose_threshold(ThresholdConfig(policy="max_balanced"), "max_balanced", probs, y, LABELS)
    assert balanced.threshold > 0
    with pytest.raises(ValueError, match="needs validation rows labelled 'oos'"):
        choose_threshold(ThresholdConfig(), "target_oos_recall", probs[y != 2], y[y != 2], LABELS)


def test_auto_policy_depends_on_the_data():
    assert resolve_policy(ThresholdConfig(), {"a", "oos"}, ["a", "oos"]) == "target_oos_recall"
    assert resolve_policy(ThresholdConfig(), {"a", "b"}, ["a", "b"]) == "none"


def test_a_served_rule_keeps_the_reject_label_where_it_can_be_answered():
    labels = ("balance", "oos", "transfer")
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    at_zero = DecisionRule.serving(labels, 0.0, "oos")  # the head has oos as a class
    assert at_zero.reject_label == "oos" and at_zero.threshold == 0.0
    assert at_zero.decide(probs)[0].tolist() == [1, 0]  # the same answers as without it
    assert DecisionRule.serving(("balance", "transfer"), 0.0, "oos").reject_label is None
    rejecting = DecisionRule.serving(("balance", "transfer"), 0.6, "oos")
    assert rejecting.reject_label == "oos" and rejecting.label_of(int(rejecting.decide(probs[1:, ::2])[0][0])) == "oos"
