"""The release gate's statistics against values computed by hand, its decision rule, and the pairing
of two versions' held-out answers."""

import math

import pytest

from heads.paired_evidence import HELDOUT_FILE, heldout_pairs, text_key, write_heldout
from heads.release_gate import (
    GatePolicy,
    PairedCounts,
    decide,
    difference_interval,
    mcnemar_exact_p,
)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (10, 2, 2 * (1 + 12 + 66) / 4096),  # 0.0386
        (2, 10, 2 * (1 + 12 + 66) / 4096),  # two-sided: symmetric
        (0, 6, 2 / 64),  # 0.03125
        (20, 5, 2 * (1 + 25 + 300 + 2300 + 12650 + 53130) / 2**25),  # 0.00408
        (5, 5, 1.0),  # the doubled tail passes 1: capped
        (0, 0, 1.0),  # no discordant pair: no evidence of a difference
    ],
)
def test_mcnemar_exact_p_matches_the_binomial_by_hand(b, c, expected):
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_exact_p_does_not_underflow_on_many_discordant_pairs():
    p = mcnemar_exact_p(2200, 1800)  # 2^-4000 is 0.0 as a float; the log-space sum is not
    assert 0 < p < 1e-9
    assert mcnemar_exact_p(3000, 3000) == 1.0


def test_difference_interval_by_hand():
    # b=10, c=2 of 200: difference 8/200. Agresti-Min: b'=10.5, c'=2.5, n'=202, centre 8/202,
    # se = sqrt((13/202 - (8/202)^2) / 202) = 0.017630, z = 1.959964.
    difference, low, high = difference_interval(PairedCounts(180, 10, 2, 8))
    assert difference == pytest.approx(0.04)
    assert low == pytest.approx(8 / 202 - 1.959964 * 0.017630, abs=1e-5)  # 0.00505
    assert high == pytest.approx(8 / 202 + 1.959964 * 0.017630, abs=1e-5)  # 0.07416


def test_the_interval_never_collapses_to_a_point():
    _, low, high = difference_interval(PairedCounts(1000, 0, 0, 0))
    assert low < 0 < high  # the plain Wald interval would be [0, 0]
    assert low == pytest.approx(-1.959964 * math.sqrt(1 / 1002) / math.sqrt(1002), abs=1e-6)


POLICY = GatePolicy()  # margin 0.01, min_items 200, alpha 0.05


def test_too_few_items_is_refused_with_the_numbers():
    decision = decide({"held_out": PairedCounts(30, 4, 2, 1)}, POLICY)
    assert not decision.promoted
    assert decision.reason == "held_out: only 37 paired items, need 200"
    assert decision.sources["held_out"]["n"] == 37


def test_a_worse_candidate_is_refused_with_its_interval_and_p():
    decision = decide({"held_out": PairedCounts(900, 2, 20, 78)}, POLICY)
    assert not decision.promoted
    assert decision.reason.startswith("held_out: candidate worse by 1.8 points (95% CI -2.7..-0.9), p=")
    assert decision.sources["held_out"]["significantly_worse"]
    assert decision.sources["held_out"]["p_value"] == pytest.approx(mcnemar_exact_p(2, 20), rel=1e-3)


def test_a_significantly_better_candidate_is_promoted():
    decision = decide({"held_out": PairedCounts(250, 20, 5, 25)}, POLICY)
    assert decision.promoted
    assert "candidate better by 5.0 points" in decision.reason and "p=0.004077" in decision.reason


def test_an_equal_candidate_is_promoted_as_non_inferior():
    decision = decide({"held_out": PairedCounts(950, 0, 0, 50)}, POLICY)
    assert decision.promoted
    assert "not worse than the primary within 1.0 points" in decision.reason


def test_the_default_margin_lets_identical_answers_pass_at_the_minimum_of_items():
    assert decide({"held_out": PairedCounts(180, 0, 0, 20)}, POLICY).promoted  # interval low end -0.97 points
    assert not decide({"held_out": PairedCounts(180, 0, 0, 20)}, GatePolicy(margin=0.005)).promoted


def test_an_undecided_candidate_is_refused_and_told_what_would_help():
    decision = decide({"held_out": PairedCounts(170, 10, 10, 10)}, POLICY)
    assert not decision.promoted
    assert "not shown within 1.0 points" in decision.reason and "more items" in decision.reason
    # A wider margin accepts the same evidence.
    assert decide({"held_out": PairedCounts(170, 10, 10, 10)}, GatePolicy(margin=0.05)).promoted


def test_a_small_source_that_shows_harm_vetoes_a_large_one_that_passes():
    decision = decide(
        {"held_out": PairedCounts(950, 0, 0, 50), "shadow_feedback": PairedCounts(20, 0, 9, 1)},
        POLICY,
    )
    assert not decision.promoted
    assert decision.reason.startswith("shadow_feedback: candidate worse by 30.0 points")


def test_every_source_with_enough_items_must_pass():
    decision = decide(
        {"held_out": PairedCounts(950, 0, 0, 50), "shadow_feedback": PairedCounts(170, 10, 10, 10)},
        POLICY,
    )
    assert not decision.promoted and decision.reason.startswith("shadow_feedback: candidate not shown")


def test_unavailable_sources_are_reported_and_alone_refuse():
    decision = decide({"held_out": "version x has no file", "shadow_feedback": "no database"}, POLICY)
    assert not decision.promoted
    assert decision.reason == "no paired evidence (held_out: version x has no file; shadow_feedback: no database)"
    assert decision.sources["held_out"] == {"available": False, "why": "version x has no file"}


@pytest.mark.parametrize("bad", [{"margin": -0.1}, {"margin": 1.0}, {"min_items": 0}, {"alpha": 0.0}])
def test_the_policy_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        GatePolicy(**bad)


def test_held_out_answers_pair_on_the_normalised_text_and_the_true_label(tmp_path):
    primary, candidate = tmp_path / "v1", tmp_path / "v2"
    primary.mkdir(), candidate.mkdir()
    texts = ["book a flight", "Book  a flight ", "what's my balance", "hello", "hello"]
    truth = ["travel", "travel", "balance", "oos", "oos"]
    write_heldout(primary, "test", texts, truth, ["travel", "oos", "balance", "oos", "greet"])
    # The candidate saw "hello" once, and "what's my balance" with another true label: no pair.
    write_heldout(
        candidate, "test", texts[:3] + ["hello"], truth[:2] + ["other", "oos"], ["travel"] * 2 + ["x", "greet"]
    )
    counts, info = heldout_pairs(primary, candidate)
    # Pairs: (right, right) and (wrong, right) for the two "book a flight" items, and the first
    # "hello" of the primary (right) with the candidate's (wrong).
    assert counts == PairedCounts(both=1, candidate_only=1, primary_only=1, neither=0)
    assert info == {"primary_split": "test", "candidate_split": "test", "primary_items": 5, "candidate_items": 4}
    assert text_key("Book \u00a0a flight\n") == text_key("Book a flight")  # normalised as served
    assert "flight" not in (primary / HELDOUT_FILE).read_text().lower()  # keys, not texts


def test_a_version_without_held_out_answers_makes_the_source_unavailable(tmp_path):
    (tmp_path / "old").mkdir(), (tmp_path / "new").mkdir()
    write_heldout(tmp_path / "new", "validation", ["a"], ["x"], ["x"])
    why, _ = heldout_pairs(tmp_path / "old", tmp_path / "new")
    assert why == "version old has no heldout_predictions.json (trained before the gate existed)"
