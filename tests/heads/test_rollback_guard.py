"""Automatic rollback, the pure parts: the guard's validation, the verdict on counts, and the
serving-state transitions (a promotion under a guard opens a watch; every other change ends it;
the undo restores the state from before the promotion, once). Then the same on a real store and
through the CLI."""

import datetime as dt
import json

import pytest

from heads import serving_state
from heads.errors import RegistryError
from heads.rollback_guard import Guard, Watch, breach, figures, make_guard, parse_duration
from heads.serving_state import ServingState, Shadow
from inferencedb.release_watch import ReleaseCounts as Counts  # what the job passes to breach()
from tests.heads.test_serving import heads_cli, store, versions  # noqa: F401 - fixtures

NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)
GUARD = Guard(window_s=600, min_agreement=0.7, max_error_rate=0.1, min_items=10)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window_s": 0, "min_agreement": 0.5}, r"window must be in \(0, 604800\]"),
        ({"window_s": 8 * 86400, "min_agreement": 0.5}, "window must be in"),
        ({"max_error_rate": 1.5}, r"max_error_rate must be in \[0, 1\], got 1.5"),
        ({"min_agreement": -0.1}, "min_agreement must be in"),
        ({}, "needs at least one bound"),
        ({"max_reject_rate": 0.5, "min_items": 0}, "min_items must be >= 1"),
        ({"max_reject_rate": 0.5, "shadow_fraction": 0}, r"shadow_fraction must be in \(0, 1\]"),
    ],
)
def test_a_guard_out_of_range_is_refused_with_its_reason(fields, message):
    with pytest.raises(RegistryError, match=message):
        make_guard(**fields)


def test_durations():
    assert [parse_duration(t) for t in ("90", "90s", "10m", "2h", "1d", "0.5m")] == [90, 90, 600, 7200, 86400, 30]
    for bad in ("", "ten", "10x", "m"):
        with pytest.raises(RegistryError, match="a duration is a number"):
            parse_duration(bad)


def test_no_verdict_before_min_items_then_the_first_crossed_bound():
    # 9 compared items, none agreeing: not enough to judge.
    assert breach(GUARD, Counts(asked=9, answered=9, compared=9, agreed=0)) is None
    found = breach(GUARD, Counts(asked=10, answered=10, compared=10, agreed=6))
    assert (found.bound, found.value, found.limit, found.items) == ("min_agreement", 0.6, 0.7, 10)
    assert found.reason() == "agreement 0.600 < 0.7 over 10 items"
    # At the bound is not across it; the error rate is checked first.
    assert breach(GUARD, Counts(asked=10, failed=1, answered=9, compared=10, agreed=7)) is None
    found = breach(GUARD, Counts(asked=10, failed=2, answered=8, compared=10, agreed=0))
    assert found.bound == "max_error_rate" and found.reason() == "error_rate 0.200 > 0.1 over 10 items"


def test_a_bound_left_unset_is_never_checked():
    only_rejects = Guard(max_reject_rate=0.5, min_items=1)
    assert breach(only_rejects, Counts(asked=5, failed=5, compared=5)) is None  # errors, disagreement: not asked
    assert breach(only_rejects, Counts(asked=4, answered=4, rejected=3)).bound == "max_reject_rate"
    assert figures(Counts(asked=4, answered=4, rejected=3)) == {
        "error_rate": 0.0,
        "reject_rate": 0.75,
        "agreement": None,
        "asked": 4,
        "failed": 0,
        "answered": 4,
        "rejected": 3,
        "compared": 0,
        "agreed": 0,
    }


def test_a_promotion_under_a_guard_keeps_the_old_primary_as_a_shadow_and_opens_a_watch():
    s0 = ServingState(primary="a", shadows=(Shadow("b", 0.5),), guard=Guard(min_agreement=0.7, shadow_fraction=0.5))
    s1 = serving_state.promote(s0, "b", now=NOW)
    assert s1.primary == "b" and s1.shadows == (Shadow("a", 0.5),)
    assert s1.watch == Watch(version="b", previous="a", since="2026-11-30T10:00:00.000000+00:00")
    assert s1.watch.ends(s1.guard) == NOW + dt.timedelta(seconds=600)
    assert ServingState.from_dict(s1.to_dict()) == s1
    # Without a guard, or promoting the primary again: no watch, no shadow added.
    assert serving_state.promote(ServingState(primary="a"), "b").shadows == ()
    assert serving_state.promote(ServingState(primary="a"), "b").watch is None
    assert serving_state.promote(s1, "b").watch is None


def test_states_without_a_guard_read_and_write_as_before():
    legacy = {"primary": "v1", "shadows": [], "candidate": None, "fallback": None, "updated_at": "", "reason": ""}
    state = ServingState.from_dict(legacy)
    assert state.guard is None and state.watch is None
    assert state.to_dict(with_history=False) == legacy


@pytest.mark.parametrize(
    "change",
    [
        lambda s: serving_state.set_shadow(s, "c", 0.1),
        lambda s: serving_state.set_candidate(s, "c", 10),
        lambda s: serving_state.set_fallback(s, "c"),
        lambda s: serving_state.set_guard(s, Guard(max_error_rate=0.5)),
        lambda s: serving_state.set_guard(s, None),
    ],
)
def test_every_other_change_ends_the_watch(change):
    watched = serving_state.promote(ServingState(primary="a", guard=GUARD), "b", now=NOW)
    assert watched.watch is not None
    assert change(watched).watch is None


def test_the_undo_restores_the_state_before_the_promotion_only_while_it_serves():
    before = serving_state.stamp(ServingState(primary="a", guard=GUARD), None, "guard")
    after = serving_state.stamp(serving_state.promote(before, "b", now=NOW), before, "promote b")
    undone = serving_state.undo_promotion(after, after.watch)
    assert undone.primary == "a" and undone.shadows == () and undone.watch is None and undone.guard == GUARD
    with pytest.raises(serving_state.StateMoved, match="no longer the serving state"):
        serving_state.undo_promotion(undone, after.watch)  # never twice
    moved = serving_state.stamp(serving_state.set_shadow(after, "c", 0.1), after, "operator")
    with pytest.raises(serving_state.StateMoved):
        serving_state.undo_promotion(moved, after.watch)  # an operator's change is left alone


def test_guard_operation_validates_before_any_change():
    with pytest.raises(RegistryError, match="guard needs a policy"):
        serving_state.operation("guard")
    with pytest.raises(RegistryError, match="must be in"):
        serving_state.operation("guard", guard=Guard(min_agreement=2.0))
    change, reason, is_rollback = serving_state.operation("guard", guard=GUARD)
    assert reason == "guard window 600s: error_rate <= 0.1, agreement >= 0.7 (10+ items)" and not is_rollback
    with pytest.raises(RegistryError, match="has no guard"):
        serving_state.operation("guard_off")[0](ServingState(primary="a"))


def test_guard_promote_and_undo_on_a_store_through_the_cli(store):  # noqa: F811
    store, (v1, v2, v3, _) = store
    assert heads_cli(store, "promote", "intents", v1).returncode == 0
    bad = heads_cli(store, "guard", "intents", "--window", "10m", "--min-agreement", "1.5")
    assert bad.returncode == 2 and "min_agreement must be in [0, 1], got 1.5" in bad.stderr
    assert heads_cli(store, "guard", "intents", "--window", "10m").returncode == 2  # no bound
    done = heads_cli(store, "guard", "intents", "--window", "5m", "--min-agreement", "0.7", "--min-items", "20")
    assert done.returncode == 0, done.stderr
    assert heads_cli(store, "promote", "intents", v2).returncode == 0
    status = json.loads(heads_cli(store, "status", "intents").stdout)
    assert status["guard"]["window_s"] == 300 and status["guard"]["min_items"] == 20
    assert status["watch"]["version"] == v2 and status["watch"]["previous"] == v1
    assert status["shadows"] == [{"version": v1, "fraction": 1.0}]
    watch = store.serving("intents").watch
    state = store.change_serving(
        "intents", lambda s: serving_state.undo_promotion(s, watch), reason="automatic rollback", rollback=True
    )
    assert state.primary == v1 and state.shadows == () and state.guard is not None and state.watch is None
    assert store.serving("intents").reason == "automatic rollback"
    with pytest.raises(serving_state.StateMoved):
        store.change_serving("intents", lambda s: serving_state.undo_promotion(s, watch), reason="x", rollback=True)
    assert heads_cli(store, "guard", "intents", "--off").returncode == 0
    assert "guard" not in json.loads(heads_cli(store, "status", "intents").stdout)
