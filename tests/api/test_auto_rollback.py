"""Automatic rollback on real components. The job (api/core/auto_rollback.py) in a router runtime
with its real inference log and a real PostgreSQL, on rows of known labels written through that
log (the figures and the verdict exactly as counted); then the issue's test on the deployed
stack: a deliberately bad version (trained on permuted intents) promoted under a guard while
traffic flows through gunicorn and the real embedder is rolled back within the window, with its
figures recorded, and no request fails."""

from __future__ import annotations

import csv
import itertools
import shutil
import time
import urllib.request
import uuid

import pytest

from api.core import metrics
from api.core.auto_rollback import AutoRollback
from heads import serving_state
from heads.config import parse_config
from heads.decisions import read_decisions
from heads.pipeline import train_head
from heads.rollback_guard import make_guard
from inferencedb.keys import create_key
from inferencedb.migrations import apply_migrations
from inferencedb.prediction_record import PredictionRecord
from tests.api.servers import RouterProcess
from tests.api.test_e2e import NO_RATE_LIMIT, call
from tests.api.test_e2e_lifecycle import Traffic
from tests.db.helpers import query, wait_until

PREDICT = "/v1/models/intents/predict"


def permuted(clinc_subset: dict, out) -> dict[str, str]:
    """The dataset with every intent renamed to the next one (oos stays): a head trained on it is
    as sure of itself as the original and gives another intent for nearly every in-domain text."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, path in clinc_subset.items():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        intents = sorted({r["label"] for r in rows if r["label"] != "oos"})
        shift = {label: intents[(i + 1) % len(intents)] for i, label in enumerate(intents)} | {"oos": "oos"}
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("text", "label"))
            writer.writerows((r["text"], shift[r["label"]]) for r in rows)
        paths[split] = str(out / f"{split}.csv")
    return paths


class TextTraffic(Traffic):
    """Traffic that cycles through `texts` (in-domain texts: the two versions' answers differ)."""

    def __init__(self, url: str, key: str, texts: list[str], threads: int = 4):
        super().__init__(url, key, threads)
        self._texts = texts

    def _run(self, worker: int) -> None:
        for text in itertools.cycle(self._texts[worker::4]):
            if self._stop.is_set():
                return
            self.record(*call(f"{self.url}{PREDICT}", {"text": text}, key=self.key)[:2])


def in_domain_texts(clinc_subset: dict, n: int) -> list[str]:
    with open(clinc_subset["train"], newline="") as f:
        return [r["text"] for r in csv.DictReader(f) if r["label"] != "oos"][:n]


def promote_under_guard(router, version: str, **guard) -> None:
    store = router.store
    change, reason, _ = serving_state.operation("guard", guard=make_guard(**guard))
    store.change_serving("intents", change, reason=reason)
    store.set_serving("intents", version)
    router.runtime.heads.refresh()


def answers(router, dsn: str, version: str, labels: list[str], *, shadow: list[str] | None = None, **outcome) -> None:
    """One item per label as the router logs it, through the real inference log: `version`'s
    answer (role primary unless `outcome` says otherwise), and the previous primary's shadow row
    for the same item when `shadow` gives its labels. Returns once every row is in PostgreSQL."""
    previous = router.store.serving("intents").watch.previous
    records = []
    for i, label in enumerate(labels):
        item = {"request_id": f"req-{uuid.uuid4().hex}", "tenant": "default", "model": "intents", "input_text": "t"}
        records.append(PredictionRecord(**item, version=version, label=label, **outcome))
        if shadow is not None:
            records.append(PredictionRecord(**item, version=previous, role="shadow", label=shadow[i]))
    expected = rows_in(dsn) + len(records)
    router.runtime.inference_log.log_many(records)
    wait_until(lambda: rows_in(dsn) == expected)


def rows_in(dsn: str) -> int:
    return query(dsn, "SELECT count(*) FROM predictions")[0][0]


def job(router) -> AutoRollback:
    return AutoRollback(router.runtime.database, router.runtime.heads, interval_s=0.0, settle_s=0.0)


def rollbacks() -> float:
    return metrics.AUTO_ROLLBACKS.labels("default/intents")._value.get()


@pytest.fixture
def versions(db_router):
    """(serving primary, two other versions of `intents`) of the router's store."""
    store = db_router[0].store
    old = store.serving_version("intents")
    return old, *[v for v in store.versions("intents") if v != old]


def test_a_version_that_disagrees_is_rolled_back_once_with_its_figures(db_router, versions):
    router, dsn = db_router
    old, new, _ = versions
    promote_under_guard(router, new, window_s=300, min_agreement=0.5, min_items=20)
    assert router.store.serving("intents").shadows[0].version == old  # kept on, to compare with
    assert list(router.runtime.heads.watched_sets()) == [("default", "intents")]  # what the job looks at
    checker, before = job(router), rollbacks()

    answers(router, dsn, new, ["balance"] * 10, shadow=["bill_balance"] * 10)
    checker.run_if_due()
    assert router.store.serving_version("intents") == new  # 10 items: below min_items, no verdict yet

    answers(router, dsn, new, ["balance"] * 30, shadow=["balance"] * 10 + ["bill_due"] * 20)
    checker.run_if_due()
    state = router.store.serving("intents")
    assert state.primary == old and state.watch is None and state.shadows == ()
    assert state.reason == f"automatic rollback of {new} to {old}: agreement 0.250 < 0.5 over 40 items"
    assert router.runtime.heads.get("default", "intents").primary.version == old  # this worker, at once
    assert router.runtime.heads.watched_sets() == {}  # the restored state holds no watch
    (decision,) = read_decisions(router.store.model_dir("intents"))
    assert (decision["kind"], decision["version"], decision["outcome"]) == ("auto_rollback", new, "rolled_back")
    assert decision["reason"] == state.reason
    assert {k: decision["evidence"][k] for k in ("bound", "limit", "compared", "agreed", "agreement", "asked")} == {
        "bound": "min_agreement",
        "limit": 0.5,
        "compared": 40,
        "agreed": 10,
        "agreement": 0.25,
        "asked": 40,
    }
    assert rollbacks() == before + 1

    checker.run_if_due()  # never twice
    assert len(read_decisions(router.store.model_dir("intents"))) == 1 and rollbacks() == before + 1


def test_only_the_elected_process_rolls_back(db_router, versions):
    class Follower:
        def held(self):
            return False

        def close(self):
            pass

    router, dsn = db_router
    old, new, _ = versions
    promote_under_guard(router, new, window_s=300, min_agreement=0.5, min_items=10)
    answers(router, dsn, new, ["balance"] * 10, shadow=["bill_due"] * 10)
    follower = AutoRollback(router.runtime.database, router.runtime.heads, interval_s=0.0, leadership=Follower())
    follower.run_if_due()
    assert router.store.serving_version("intents") == new
    job(router).run_if_due()  # a lone process (no leadership) always runs
    assert router.store.serving_version("intents") == old


def test_with_nothing_under_watch_no_process_asks_for_the_lead(router):
    asked = []

    class Spy:
        def held(self):
            asked.append(1)
            return True

        def close(self):
            pass

    idle = AutoRollback(router.runtime.database, router.runtime.heads, interval_s=0.0, leadership=Spy())
    idle.run_if_due()  # no model has a guard: nothing to watch, no database session either
    assert asked == []


@pytest.mark.parametrize(
    ("guard", "rows", "reason"),
    [
        # The primary's own failures, and the items the fallback answered in its place.
        (
            {"max_error_rate": 0.2},
            [({"status": "embedder_unavailable"}, 2), ({"role": "fallback", "label": "balance"}, 2), ({}, 6)],
            "error_rate 0.400 > 0.2 over 10 items",
        ),
        # Answers with the version's reject label (oos), among its answers.
        ({"max_reject_rate": 0.5}, [({"label": "oos"}, 7), ({}, 3)], "reject_rate 0.700 > 0.5 over 10 items"),
    ],
)
def test_errors_and_rejections_past_their_bound_roll_back(db_router, versions, guard, rows, reason):
    router, dsn = db_router
    old, new, _ = versions
    promote_under_guard(router, new, window_s=300, min_items=10, **guard)
    for outcome, n in rows:
        outcome = {"label": "balance", **outcome}
        if outcome.get("status", "ok") != "ok":
            outcome["label"] = None
        answers(router, dsn, new, [outcome.pop("label")] * n, **outcome)
    job(router).run_if_due()
    state = router.store.serving("intents")
    assert state.primary == old and state.reason.endswith(reason)


def test_a_version_within_its_bounds_is_kept_when_the_window_ends(db_router, versions):
    router, dsn = db_router
    old, new, _ = versions
    promote_under_guard(
        router, new, window_s=2, min_agreement=0.9, max_error_rate=0.0, max_reject_rate=0.5, min_items=10
    )
    checker = job(router)
    answers(router, dsn, new, ["balance"] * 15 + ["oos"] * 5, shadow=["balance"] * 15 + ["oos"] * 5)
    checker.run_if_due()
    assert router.store.serving_version("intents") == new and read_decisions(router.store.model_dir("intents")) == []
    time.sleep(2.0)  # past the window
    checker.run_if_due()
    checker.run_if_due()
    (decision,) = read_decisions(router.store.model_dir("intents"))
    assert (decision["outcome"], decision["version"]) == ("kept", new)
    evidence = decision["evidence"]
    assert (evidence["agreement"], evidence["reject_rate"], evidence["error_rate"], evidence["asked"]) == (
        1.0,
        0.25,
        0.0,
        20,
    )
    assert router.store.serving_version("intents") == new
    # A new leader (another process) finds the decision recorded and records nothing more.
    job(router).run_if_due()
    assert len(read_decisions(router.store.model_dir("intents"))) == 1


def test_a_state_an_operator_changed_since_the_promotion_is_left_alone(db_router, versions):
    router, dsn = db_router
    old, new, other = versions
    promote_under_guard(router, new, window_s=300, min_agreement=0.5, min_items=10)
    answers(router, dsn, new, ["balance"] * 10, shadow=["bill_due"] * 10)
    # The operator acts after the promotion; this worker has not reloaded yet (it still sees the watch).
    router.store.change_serving("intents", lambda s: serving_state.set_fallback(s, other), reason="operator")
    job(router).run_if_due()
    state = router.store.serving("intents")
    assert state.primary == new and state.reason == "operator"
    assert read_decisions(router.store.model_dir("intents")) == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"window_s": 60, "min_agreement": 1.5}, 422, "min_agreement must be in [0, 1], got 1.5"),
        ({"window_s": 0, "min_agreement": 0.5}, 422, "window_s must be in (0, 604800], got 0"),
        ({"window_s": 60, "max_error_rate": 0.1, "min_items": 0}, 422, "min_items must be >= 1, got 0"),
        ({"window_s": 60}, 422, "guard needs at least one of the fields max_error_rate, max_reject_rate"),
        ({"min_agreement": 0.5}, 422, "guard needs the field(s) window_s"),
        ({"window_s": 60, "min_agreement": 0.5, "min_items": 20}, 200, None),
    ],
)
def test_the_guard_over_http_is_validated(router, body, status, message):
    operator = {"Authorization": f"Bearer {router.keys['operator']}", "X-Tenant": "default"}
    response = router.client.post("/v1/models/intents/serving", json={"action": "guard", **body}, headers=operator)
    assert response.status_code == status, response.get_json()
    if message:
        assert message in response.get_json()["error"]["message"]
        assert router.store.serving("intents").guard is None
    else:
        assert response.get_json()["guard"] == {
            "window_s": 60.0,
            "max_error_rate": None,
            "max_reject_rate": None,
            "min_agreement": 0.5,
            "min_items": 20,
            "shadow_fraction": 1.0,
        }
        off = router.client.post("/v1/models/intents/serving", json={"action": "guard_off"}, headers=operator)
        assert off.status_code == 200 and "guard" not in off.get_json()
        again = router.client.post("/v1/models/intents/serving", json={"action": "guard_off"}, headers=operator)
        assert again.status_code == 409 and "has no guard" in again.get_json()["error"]["message"]


def test_a_bad_version_under_traffic_is_rolled_back_within_the_window_and_no_request_fails(
    real_store, embedder_process, clinc_subset, empty_db, tmp_path
):
    from heads.embedding import RemoteEmbedder

    store = type(real_store).for_tenant(tmp_path / "models", "default")
    shutil.copytree(real_store.root.parent, store.root.parent)
    old = store.serving_version("intents")
    config = parse_config(
        {
            "name": "intents",
            "data": permuted(clinc_subset, tmp_path / "permuted"),
            "model": {"type": "mlp", "hidden_layers": [64]},
            "training": {"epochs": 30},
        }
    )
    # The session's embedding matrices (same texts, same embedder): no text is embedded again.
    cache = real_store.root.parent.parent / "cache"
    bad = train_head(
        config, store=store, cache_dir=cache, embedder=RemoteEmbedder(embedder_process.address), promote=False
    )["version"]
    apply_migrations(empty_db)
    key, operator = create_key(empty_db, tenant="default"), create_key(empty_db, tenant=None)
    env = {
        "DATABASE_URL": empty_db,
        "EMBEDDER_ADDRESS": embedder_process.address,
        "MODEL_STORE": str(store.root.parent),
        "API_SPOOL_DIR": str(tmp_path / "spool"),
        "API_ROLLBACK_CHECK_INTERVAL_S": "0.2",
        **NO_RATE_LIMIT,
    }
    serving, as_operator = "/v1/models/intents/serving", {"X-Tenant": "default"}
    texts = in_domain_texts(clinc_subset, 200)
    with RouterProcess(env, tmp_path / "router.log") as router, TextTraffic(router.url, key, texts) as traffic:
        guard = {"action": "guard", "window_s": 60, "min_agreement": 0.5, "min_items": 20}
        status, body, _ = call(router.url + serving, guard, as_operator, key=operator)
        assert status == 200 and body["guard"]["min_agreement"] == 0.5, body
        wait_until(lambda: len(traffic.results) > 10)
        status, body, _ = call(router.url + serving, {"action": "promote", "version": bad}, as_operator, key=operator)
        assert status == 200 and body["watch"]["previous"] == old, body
        promoted_at = time.monotonic()
        wait_until(lambda: store.serving_version("intents") == old, timeout_s=60)
        rolled_back_at = time.monotonic()
        wait_until(lambda: traffic.results[-1][3] == old, timeout_s=20)
        time.sleep(0.5)
        metrics_request = urllib.request.Request(
            f"{router.url}/metrics", headers={"Authorization": f"Bearer {operator}"}
        )
        with urllib.request.urlopen(metrics_request, timeout=30) as response:
            page = response.read().decode()
    # The window is 60 s; a generous part of it for a loaded machine, and still inside it.
    assert rolled_back_at - promoted_at < 60
    assert {status for _, status, _, _ in traffic.results} == {200}, f"requests failed: {traffic.errors[:3]}"
    versions = [v for _, _, _, v in traffic.results]
    assert versions[0] == old and bad in versions and versions[-1] == old
    (decision,) = read_decisions(store.model_dir("intents"))
    assert (decision["version"], decision["outcome"], decision["evidence"]["bound"]) == (
        bad,
        "rolled_back",
        "min_agreement",
    )
    assert decision["evidence"]["compared"] >= 20 and decision["evidence"]["agreement"] < 0.5
    assert store.serving("intents").reason.startswith(f"automatic rollback of {bad} to {old}")
    assert 'router_auto_rollbacks_total{model="default/intents"} 1.0' in page
