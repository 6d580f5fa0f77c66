"""Gated promotion on a store of really trained versions: the held-out source (from the CLI), the
shadow-and-feedback source (real PostgreSQL rows), the HTTP action through the router with a real
database, and the decisions in the report."""

from __future__ import annotations

import csv
import json
import random
import shutil
import uuid

import psycopg2
import psycopg2.extras
import pytest

from heads.__main__ import main
from heads.config import parse_config
from heads.decisions import read_decisions
from heads.gated_promotion import promote_if_better
from heads.monitoring_report_files import write_report
from heads.pipeline import train_head
from heads.registry import ModelStore
from heads.release_gate import GatePolicy
from inferencedb.database import Database
from tests.datasets import write_csv

MODEL = "gated"
TRAINING = {"epochs": 6, "early_stopping_patience": 2, "batch_size": 32}


@pytest.fixture(scope="module")
def gate_store(clinc_subset, tmp_path_factory):
    """A MODEL_STORE whose tenant "default" has the n-gram model `gated` (an n-gram head learns in
    seconds and, unlike a head on the hash embedder, well above chance): two good versions (seeds 1
    and 2; the first serves) and one trained on shuffled labels (near chance: clearly worse).
    Returns (MODEL_STORE folder, {"first", "second", "bad"}: version ids)."""
    root = tmp_path_factory.mktemp("gate-store")
    store = ModelStore.for_tenant(root / "models", "default")
    with open(clinc_subset["train"], newline="") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    labels = [label for _, label in rows]
    random.Random(7).shuffle(labels)
    shuffled = write_csv(root / "shuffled.csv", [(text, label) for (text, _), label in zip(rows, labels, strict=True)])
    versions = {}
    for name, seed, train in (
        ("first", 1, clinc_subset["train"]),
        ("second", 2, clinc_subset["train"]),
        ("bad", 1, shuffled),
    ):
        data = {"train": str(train), "validation": str(clinc_subset["validation"]), "test": str(clinc_subset["test"])}
        config = parse_config(
            {
                "name": MODEL,
                "data": data,
                "model": {"type": "ngram", "ngram_buckets": 4096},
                "training": {**TRAINING, "seed": seed},
            }
        )
        versions[name] = train_head(config, store=store, cache_dir=root / "cache")["version"]
    return root / "models", versions


@pytest.fixture
def store(gate_store, tmp_path):
    """A private copy (overrides the conftest's `store`, so `router` and `db_router` serve it)."""
    shutil.copytree(gate_store[0], tmp_path / "models", symlinks=True)
    return ModelStore.for_tenant(tmp_path / "models", "default")


@pytest.fixture
def bad(gate_store):
    return gate_store[1]["bad"]


@pytest.fixture
def good(gate_store):
    """The serving version and the other good one, (primary, other)."""
    return gate_store[1]["first"], gate_store[1]["second"]


def promote_cli(store, *args, capsys, monkeypatch) -> tuple[int, dict, str]:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    rc = main(["promote", MODEL, *args, "--store", str(store.root.parent), "--tenant", "default"])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out.strip() else {}, err


def test_the_gate_refuses_a_worse_version_and_changes_nothing(store, bad, capsys, monkeypatch):
    before = store.serving(MODEL)
    rc, printed, err = promote_cli(
        store, bad, "--if-better", "--min-items", "100", capsys=capsys, monkeypatch=monkeypatch
    )
    assert rc == 1
    assert "refused: held_out: candidate worse by" in err and "(95% CI" in err and "p=" in err
    assert printed["serving"] is None
    assert store.serving(MODEL) == before and store.serving(MODEL).history == before.history
    (decision,) = read_decisions(store.model_dir(MODEL))
    assert decision["kind"] == "gate" and decision["outcome"] == "refused" and decision["version"] == bad
    held_out = decision["evidence"]["sources"]["held_out"]
    assert held_out["n"] == 195 and held_out["significantly_worse"] and held_out["p_value"] < 0.001
    assert held_out["primary_only_right"] > held_out["candidate_only_right"]
    assert decision["evidence"]["sources"]["shadow_feedback"] == {
        "available": False,
        "why": "no inference database given (DATABASE_URL)",
    }
    assert decision["evidence"]["information"]["held_out"]["candidate_split"] == "test"


def test_the_gate_promotes_a_better_version_and_says_why_in_the_history(store, bad, good, capsys, monkeypatch):
    primary, _ = good
    store.set_serving(MODEL, bad, reason="a bad promotion")
    rc, printed, _ = promote_cli(
        store, primary, "--if-better", "--min-items", "100", capsys=capsys, monkeypatch=monkeypatch
    )
    assert rc == 0
    state = store.serving(MODEL)
    assert state.primary == primary and printed["serving"]["primary"] == primary
    assert state.reason.startswith(f"gate: promote {primary} over {bad}: held_out: candidate better by ")
    assert "p=" in state.reason and "195 paired items" in state.reason
    (decision,) = read_decisions(store.model_dir(MODEL))
    assert decision["outcome"] == "promoted" and decision["evidence"]["sources"]["held_out"]["significantly_better"]


def test_the_gate_needs_enough_items_and_accepts_an_equal_version_within_the_margin(store, good, capsys, monkeypatch):
    primary, other = good
    rc, _, err = promote_cli(store, other, "--if-better", capsys=capsys, monkeypatch=monkeypatch)
    assert rc == 1 and "only 195 paired items, need 200" in err
    assert store.serving_version(MODEL) == primary
    # Two versions trained alike differ by a few items of 195: well within a 10-point margin.
    rc, printed, _ = promote_cli(
        store, other, "--if-better", "--min-items", "100", "--margin", "0.1", capsys=capsys, monkeypatch=monkeypatch
    )
    assert rc == 0, printed["decision"]["reason"]
    assert store.serving_version(MODEL) == other
    assert [d["outcome"] for d in read_decisions(store.model_dir(MODEL))] == ["refused", "promoted"]


def test_gate_flags_without_if_better_are_refused(store, good, capsys, monkeypatch):
    rc, _, err = promote_cli(store, good[1], "--margin", "0.1", capsys=capsys, monkeypatch=monkeypatch)
    assert rc == 2 and "add --if-better" in err
    assert store.serving_version(MODEL) == good[0]


def insert_pairs(dsn: str, *, primary: str, candidate: str, outcomes: list[tuple[bool, bool]], feedback: bool = True):
    """One request per item: the primary answers, the candidate scores it as a shadow, and feedback
    (when asked) gives the label "right"; a version right on the item answers "right", else "wrong"."""
    predictions, labels = [], []
    for i, (primary_right, candidate_right) in enumerate(outcomes):
        request = f"gate-{uuid.uuid4().hex[:8]}-{i}"
        for version, role, right in ((primary, "primary", primary_right), (candidate, "shadow", candidate_right)):
            label = "right" if right else "wrong"
            predictions.append((str(uuid.uuid4()), request, 0, "default", MODEL, version, role, label, 0.9))
        labels.append(("default", request, 0, MODEL, "right"))
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO predictions (row_id, created_at, request_id, item_index, tenant, model, version, role, "
            "label, probability) VALUES %s",
            predictions,
            template="(%s, now(), %s, %s, %s, %s, %s, %s, %s, %s)",
        )
        if feedback:
            psycopg2.extras.execute_values(
                cur, "INSERT INTO feedback (tenant, request_id, item_index, model, label) VALUES %s", labels
            )
    conn.close()


def test_shadow_items_with_feedback_decide_when_the_held_out_split_is_too_small(store, good, db):
    primary, other = good
    # 300 items: both right on 250, the candidate alone on 30, the primary alone on 5, neither on 15.
    outcomes = [(True, True)] * 250 + [(False, True)] * 30 + [(True, False)] * 5 + [(False, False)] * 15
    insert_pairs(db, primary=primary, candidate=other, outcomes=outcomes)
    insert_pairs(
        db, primary=primary, candidate=other, outcomes=[(True, True)] * 6 + [(True, False)] * 4, feedback=False
    )
    database = Database(db)
    try:
        outcome = promote_if_better(store, MODEL, other, GatePolicy(), database=database, note="(test)")
    finally:
        database.close()
    assert outcome.promoted, outcome.decision["reason"]
    sources = outcome.decision["evidence"]["sources"]
    assert sources["held_out"]["n"] == 195 and not sources["held_out"]["enough_items"]
    shadow = sources["shadow_feedback"]
    assert (shadow["n"], shadow["both_right"], shadow["candidate_only_right"], shadow["primary_only_right"]) == (
        300,
        250,
        30,
        5,
    )
    assert shadow["significantly_better"] and shadow["difference"] == pytest.approx(25 / 300, abs=1e-6)
    # Information only: agreement on the 10 items without feedback, accuracy on feedback per version.
    info = outcome.decision["evidence"]["information"]["shadow_feedback"]
    assert info["agreement_without_feedback"] == {"compared": 10, "agreed": 6, "rate": 0.6}
    assert info["feedback_accuracy"] == [
        {"version": primary, "role": "primary", "with_feedback": 300, "correct": 255, "accuracy": 0.85}
    ]
    assert store.serving(MODEL).reason.endswith("(test)")


def test_a_small_source_that_shows_harm_vetoes_the_promotion(store, good, db):
    primary, other = good
    insert_pairs(db, primary=primary, candidate=other, outcomes=[(True, True)] * 30 + [(True, False)] * 12)
    database = Database(db)
    try:
        outcome = promote_if_better(store, MODEL, other, GatePolicy(min_items=100, margin=0.2), database=database)
    finally:
        database.close()
    assert not outcome.promoted
    assert outcome.decision["reason"].startswith("shadow_feedback: candidate worse by 28.6 points")
    assert store.serving_version(MODEL) == primary


def serving_call(router, body):
    headers = {"Authorization": f"Bearer {router.keys['operator']}", "X-Tenant": "default"}
    return router.client.post("/v1/models/gated/serving", json=body, headers=headers)


def test_http_gated_promote_refuses_with_409_and_promotes_with_200(db_router, bad, good):
    router, _ = db_router
    primary, _ = good
    response = serving_call(router, {"action": "promote", "version": bad, "if_better": True, "min_items": 100})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "gate_refused"
    assert error["message"].startswith("refused by the release gate: held_out: candidate worse by")
    assert (
        error["decision"]["outcome"] == "refused" and error["decision"]["evidence"]["sources"]["held_out"]["n"] == 195
    )
    # The database answered: its source is there, without pairs.
    assert "scored by" in error["decision"]["evidence"]["sources"]["shadow_feedback"]["why"]
    assert router.store.serving_version(MODEL) == primary

    router.store.set_serving(MODEL, bad, reason="a bad promotion")
    body = {"action": "promote", "version": primary, "if_better": True, "min_items": 100, "reason": "ticket 42"}
    response = serving_call(router, body)
    assert response.status_code == 200, response.get_json()
    state = response.get_json()
    assert state["primary"] == primary and state["decision"]["outcome"] == "promoted"
    assert state["reason"].startswith(f"gate: promote {primary} over {bad}: held_out: candidate better by")
    assert "(ticket 42, HTTP, operator key" in state["reason"]

    report = router.client.get("/v1/models/gated/report").get_json()
    assert [(d["version"], d["outcome"]) for d in report["decisions"]] == [(bad, "refused"), (primary, "promoted")]
    assert [s["primary"] for s in report["serving_history"]][-3:] == [primary, bad, primary]
    assert report["serving_history"][-1]["reason"] == state["reason"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "promote", "version": "v", "margin": 0.01}, "margin and min_items of a promote need if_better"),
        ({"action": "shadow", "version": "v", "if_better": True}, "if_better apply to the action promote only"),
        ({"action": "promote", "version": "v", "if_better": True, "margin": 1.5}, "margin"),
        ({"action": "promote", "version": "v", "if_better": "yes"}, "if_better"),
    ],
)
def test_http_gate_fields_are_validated(router, body, message):
    response = serving_call(router, body)
    assert response.status_code == 422
    assert message in response.get_json()["error"]["message"]


def test_the_html_report_lists_decisions_and_the_serving_history(store, bad, good, tmp_path, capsys, monkeypatch):
    promote_cli(store, bad, "--if-better", "--min-items", "100", capsys=capsys, monkeypatch=monkeypatch)
    from heads.release_history import release_history

    report = {"model": MODEL, "since": "2026-11-01", "until": "2026-11-02", "versions": [], "shadow_agreement": []}
    page = write_report({**report, **release_history(store, MODEL)}, {}, tmp_path / "out").read_text()
    assert "<h2>Release decisions</h2>" in page and "candidate worse by" in page
    assert "held_out: n=195, difference -" in page and "shadow_feedback: unavailable" in page
    assert f"<td>{good[0]}</td>" in page  # the serving history's current primary


def test_the_contract_and_the_validation_agree_on_the_gate_fields():
    from api.web.validation import parse_serving_change
    from tests.api.test_schemas import _agree

    bodies = [
        {"action": "promote", "version": "v", "if_better": True},
        {"action": "promote", "version": "v", "if_better": True, "margin": 0.01, "min_items": 50},
        {"action": "promote", "version": "v", "if_better": False},
        {"action": "promote", "version": "v", "if_better": False, "margin": 0.01},
        {"action": "promote", "version": "v", "min_items": 50},
        {"action": "promote", "version": "v", "if_better": True, "margin": 1},
        {"action": "promote", "version": "v", "if_better": True, "margin": -0.1},
        {"action": "promote", "version": "v", "if_better": True, "min_items": 0},
        {"action": "promote", "version": "v", "if_better": True, "min_items": 2.5},
        {"action": "promote", "version": "v", "if_better": 1},
        {"action": "shadow", "version": "v", "if_better": True},
        {"action": "rollback", "margin": 0.01},
    ]
    _agree("ServingChange", parse_serving_change, bodies)


def test_each_version_keeps_its_held_out_answers_checksummed(store, good):
    from heads.manifest import Manifest
    from heads.paired_evidence import HELDOUT_FILE, read_heldout

    folder = store.version_dir(MODEL, good[0])
    assert HELDOUT_FILE in Manifest.read(folder).files  # verified with the version's other reports
    split, items = read_heldout(folder)
    assert split == "test" and len(items) == 13 * 15
    accuracy = sum(truth == served for _, truth, served in items) / len(items)
    assert accuracy == pytest.approx(store.load(MODEL, good[0]).metrics["accuracy"], abs=1e-4)


def test_live_shadow_traffic_with_feedback_pairs_exactly_like_the_held_out_split(db_router, good, clinc_subset):
    """The router's own rows: the test split sent as traffic with the candidate shadowing, each
    item corrected with its true label through the feedback endpoint, then the gate over HTTP. The
    same texts, labels and decision rule must give the same paired counts as the held-out source."""
    from heads import serving_state
    from tests.db.helpers import query, wait_until

    router, db = db_router
    primary, candidate = good
    router.store.change_serving(MODEL, lambda s: serving_state.set_shadow(s, candidate, 1.0), reason="test")
    router.runtime.heads.refresh()
    with open(clinc_subset["test"], newline="") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    batches = [rows[i : i + 64] for i in range(0, len(rows), 64)]
    for b, batch in enumerate(batches):
        response = router.client.post(
            f"/v1/models/{MODEL}/predict",
            json={"texts": [text for text, _ in batch]},
            headers={"X-Request-ID": f"live-{b}"},
        )
        assert response.status_code == 200 and response.get_json()["version"] == primary
        response.close()  # runs the shadow job, as the server does once the answer is sent
    wait_until(lambda: query(db, "SELECT count(*) FROM predictions WHERE role = 'shadow'")[0][0] == len(rows))
    for b, batch in enumerate(batches):
        for i, (_, label) in enumerate(batch):
            response = router.client.post(f"/v1/predictions/live-{b}/feedback", json={"label": label, "item_index": i})
            assert response.status_code == 201

    body = {"action": "promote", "version": candidate, "if_better": True, "min_items": 100, "margin": 0.1}
    response = serving_call(router, body)
    assert response.status_code == 200, response.get_json()
    sources = response.get_json()["decision"]["evidence"]["sources"]
    cells = ("n", "both_right", "candidate_only_right", "primary_only_right", "neither_right")
    assert sources["shadow_feedback"]["n"] == len(rows)
    assert [sources["shadow_feedback"][c] for c in cells] == [sources["held_out"][c] for c in cells]
    information = response.get_json()["decision"]["evidence"]["information"]["shadow_feedback"]
    assert information["agreement_without_feedback"]["compared"] == 0  # every item got feedback
    (accuracy,) = information["feedback_accuracy"]
    assert accuracy["version"] == primary and accuracy["with_feedback"] == len(rows)


def test_http_gated_promote_fails_closed_when_the_database_is_unreachable(router, good):
    """The router's database does not answer: no promotion on held-out evidence alone, a 503 to
    retry, and nothing recorded (the gate never decided)."""
    response = serving_call(router, {"action": "promote", "version": good[1], "if_better": True, "min_items": 100})
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "database_unavailable"
    assert router.store.serving_version(MODEL) == good[0]
    assert read_decisions(router.store.model_dir(MODEL)) == []
