"""One deadline for the whole answer, and the time kept for the fallback: the rules
(api/core/deadlines.py), and the predictor applying them through the Flask test client (fake
embedder, real trained heads). tests/api/test_deadline_e2e.py checks the bound on the real stack."""

from __future__ import annotations

import json
import time

import pytest

from api.core.deadlines import PEAK_DECAY, Deadlines
from embedder.errors import DeadlineExceeded
from heads import serving_state

PREDICT = "/v1/models/intents/predict"


def test_the_request_wins_then_the_tenants_model_then_the_model_then_the_default_all_capped():
    deadlines = Deadlines(default_s=2.0, per_model_ms={"intents": 300, "acme/intents": 120, "big": 90_000}, max_s=60)
    assert deadlines.budget_s("acme", "intents", 0.05) == 0.05
    assert deadlines.budget_s("acme", "intents", None) == 0.12
    assert deadlines.budget_s("other", "intents", None) == 0.3
    assert deadlines.budget_s("other", "plain", None) == 2.0
    assert deadlines.budget_s("other", "big", None) == 60
    assert deadlines.budget_s("other", "plain", 75.0) == 60


def test_the_reserve_is_the_floor_plus_a_decaying_peak_of_the_fallbacks_cost():
    deadlines = Deadlines(default_s=1.0, reserve_floor_s=0.005)
    assert deadlines.reserve_s("t", "m", "v1") == 0.005  # never measured: the floor
    deadlines.observe("t", "m", "v1", 0.002)
    assert deadlines.reserve_s("t", "m", "v1") == pytest.approx(0.007)
    deadlines.observe("t", "m", "v1", 0.020)  # one slow answer raises it at once
    assert deadlines.reserve_s("t", "m", "v1") == pytest.approx(0.025)
    deadlines.observe("t", "m", "v1", 0.001)  # and is forgotten gradually
    assert deadlines.reserve_s("t", "m", "v1") == pytest.approx(0.005 + 0.020 * PEAK_DECAY)
    assert deadlines.reserve_s("t", "m", "v2") == 0.005  # per fallback version
    deadlines.observe("t", "m", "v1", 2.0)  # a pause of the process while the fallback answered
    assert deadlines.reserve_s("t", "m", "v1", budget_s=0.150) == pytest.approx(0.075)  # the primary keeps half


def test_the_primary_s_lateness_is_the_worker_s_and_reserved_for_every_fallback():
    """A timed-out call returns late by what the worker's scheduling costs, whichever model made
    it: a fallback answering for the first time gets that much reserved too."""
    deadlines = Deadlines(default_s=1.0, reserve_floor_s=0.005)
    deadlines.observe("t", "m", "v1", 0.002, lateness_s=0.010)
    assert deadlines.reserve_s("t", "m", "v1") == pytest.approx(0.005 + 0.010 + 0.002)
    assert deadlines.reserve_s("t", "other", "v9") == pytest.approx(0.005 + 0.010)  # never answered: the worker's
    deadlines.observe("t", "other", "v9", 0.001)  # a failure in time: the lateness decays
    assert deadlines.reserve_s("t", "m", "v1") == pytest.approx(0.005 + 0.010 * PEAK_DECAY + 0.002)


class SlowFake:
    """Wraps the fake embedder: records each call's timeout, and takes `delay_s` (raising
    DeadlineExceeded, as the real client does, when the timeout is shorter)."""

    def __init__(self, inner, delay_s: float = 0.0):
        self.inner, self.delay_s, self.timeouts = inner, delay_s, []
        self.slow_calls = 10**9  # calls that take delay_s; later ones are fast
        self.late_s = 0.0  # how late a timed-out call returns

    def embed(self, texts, *, timeout=None, scope="", features=""):
        self.timeouts.append(timeout)
        if len(self.timeouts) > self.slow_calls:
            return self.inner.embed(texts, timeout=timeout, scope=scope, features=features)
        if self.delay_s > timeout:
            time.sleep(timeout + self.late_s)
            raise DeadlineExceeded("slow fake embedder")
        time.sleep(self.delay_s)
        return self.inner.embed(texts, timeout=timeout, scope=scope, features=features)


@pytest.fixture
def slow(router):
    fake = SlowFake(router.embedder)
    router.runtime.predictor._embedder = fake
    router.runtime.predictor.deadlines = Deadlines(default_s=1.0, per_model_ms={"intents": 400}, reserve_floor_s=0.03)
    return fake


def post(router, text: str, **headers):
    response = router.client.post(
        PREDICT, data=json.dumps({"text": text}), content_type="application/json", headers=headers
    )
    response.close()  # the answer is sent: runs call_on_close, which measures the fallback's cost
    return response


def set_fallback(router) -> str:
    primary = router.store.serving_version("intents")
    fallback = next(v for v in router.store.versions("intents") if v != primary)
    router.store.change_serving("intents", lambda s: serving_state.set_fallback(s, fallback), reason="test")
    router.runtime.heads.refresh()
    return fallback


def test_without_a_fallback_the_embedding_call_gets_the_whole_deadline(router, slow):
    response = post(router, "what is my balance", **{"X-Request-Timeout-Ms": "250"})
    assert response.status_code == 200 and response.headers["X-Deadline-Ms"] == "250"
    assert 0.2 < slow.timeouts[-1] <= 0.25
    response = post(router, "what is my balance today")  # the model's default
    assert response.headers["X-Deadline-Ms"] == "400" and 0.35 < slow.timeouts[-1] <= 0.4


def test_with_a_fallback_the_primary_leaves_its_reserve_and_the_fallback_answers_in_time(router, slow):
    fallback = set_fallback(router)
    assert post(router, "what is my balance", **{"X-Request-Timeout-Ms": "250"}).get_json()["variant"] == "primary"
    assert 0.17 < slow.timeouts[-1] <= 0.25 - 0.03  # the reserve (floor) is kept back
    slow.delay_s = 10.0  # slow, not dead: it would answer, long after the deadline
    # The fallback here needs embeddings too: it gets what is left (the reserve) and also times
    # out; the answer is a 503 within the deadline, not after the embedder's 10 s.
    started = time.perf_counter()
    response = post(router, "what is my balance", **{"X-Request-Timeout-Ms": "250"})
    assert response.status_code == 503 and time.perf_counter() - started < 1.0
    assert len(slow.timeouts) == 3 and slow.timeouts[-1] <= 0.03 + 0.005
    assert router.sink.records[-1].status == "embedder_unavailable"
    assert fallback != router.store.serving_version("intents")


def test_a_fallback_answer_inside_the_reserve_is_measured_into_the_next_reserve(router, slow):
    fallback = set_fallback(router)
    slow.delay_s, slow.slow_calls = 10.0, 1  # the primary's call is slow; the fallback's, fast
    started = time.perf_counter()
    response = post(router, "what is my balance", **{"X-Request-Timeout-Ms": "250"})
    elapsed_ms = (time.perf_counter() - started) * 1000
    body = response.get_json()
    assert response.status_code == 200 and body["variant"] == "fallback" and body["version"] == fallback
    assert elapsed_ms < 1000  # around the deadline, not after the slow embedder's 10 s
    assert slow.timeouts[0] <= 0.25 - 0.03 and slow.timeouts[1] <= 0.03 + 0.005  # the fallback ran in the reserve
    deadlines = router.runtime.predictor.deadlines
    assert deadlines.reserve_s("default", "intents", fallback) > 0.03  # floor + what the fallback took


def test_the_fallback_cost_is_measured_to_the_answer_sent_not_to_the_answer_ready(router, slow):
    fallback = set_fallback(router)
    slow.delay_s, slow.slow_calls = 10.0, 1
    deadlines = router.runtime.predictor.deadlines
    response = router.client.post(
        PREDICT,
        data=json.dumps({"text": "what is my balance"}),
        content_type="application/json",
        headers={"X-Request-Timeout-Ms": "250"},
    )
    assert response.get_json()["variant"] == "fallback"
    assert deadlines.reserve_s("default", "intents", fallback) == 0.03  # rendered, not yet sent: the floor
    time.sleep(0.05)  # a slow write to the caller
    response.close()  # sent
    assert deadlines.reserve_s("default", "intents", fallback) > 0.03 + 0.05  # the writing counted


def test_a_late_timeout_is_reserved_for_every_model_and_not_counted_as_the_fallback_s_cost(router, slow):
    fallback = set_fallback(router)
    deadlines = Deadlines(default_s=2.0, reserve_floor_s=0.5)  # room for the fallback after a late timeout
    router.runtime.predictor.deadlines = deadlines
    slow.delay_s, slow.slow_calls, slow.late_s = 10.0, 1, 0.3  # the primary's call returns 300 ms late
    response = post(router, "what is my balance", **{"X-Request-Timeout-Ms": "2000"})
    assert response.get_json()["variant"] == "fallback"
    never_answered = deadlines.reserve_s("default", "another-model", "v1")
    assert never_answered >= 0.5 + 0.3  # the worker's lateness, for a model that never fell back
    own_cost = deadlines.reserve_s("default", "intents", fallback) - never_answered
    assert 0 < own_cost < 0.3  # the fallback's own work and writing, without the lateness (a loaded
    # machine made it over 60 ms once: the margin is the lateness itself)
