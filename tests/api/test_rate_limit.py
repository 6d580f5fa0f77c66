"""Per-tenant token buckets (api/core/rate_limit.py), and what each call costs."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from api.core.rate_limit import (
    FEEDBACK_COST,
    PREDICT_COST,
    REPORT_COST_PER_DAY,
    RateLimited,
    TenantRateLimiter,
    report_cost,
)
from inferencedb.keys import TenantLimits


def admitted(limiter: TenantRateLimiter, tenant: str, n: int) -> int:
    count = 0
    for _ in range(n):
        try:
            limiter.acquire(tenant)
            count += 1
        except RateLimited:
            pass
    return count


def test_a_burst_is_admitted_then_refused_with_retry_after():
    limiter = TenantRateLimiter(rate_rps=0.5, burst=5)
    assert admitted(limiter, "acme", 5) == 5
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("acme")
    assert refused.value.status == 429 and refused.value.retry_after_s == 2  # one token per 2 s
    assert "0.5 requests/s" in str(refused.value)
    assert admitted(limiter, "globex", 5) == 5  # another tenant has its own bucket


def test_tokens_come_back_at_the_rate():
    now = [100.0]
    limiter = TenantRateLimiter(rate_rps=20, burst=2, clock=lambda: now[0])
    assert admitted(limiter, "acme", 10) == 2
    now[0] += 0.06  # 1.2 tokens: one request
    assert admitted(limiter, "acme", 10) == 1
    now[0] += 0.25  # five tokens, capped at the burst of 2
    assert admitted(limiter, "acme", 10) == 2


def test_each_worker_holds_its_share_and_tenant_limits_override():
    custom = {"vip": TenantLimits(rate_rps=1, burst=40)}
    limiter = TenantRateLimiter(rate_rps=1, burst=10, workers=2, limits_for=custom.get)
    assert admitted(limiter, "acme", 20) == 5  # half of the burst of 10
    assert admitted(limiter, "vip", 50) == 20  # half of its own burst of 40
    partial = TenantRateLimiter(rate_rps=1, burst=10, limits_for={"x": TenantLimits(rate_rps=None, burst=3)}.get)
    assert admitted(partial, "x", 10) == 3  # the unset rate falls back to the default


def test_a_call_takes_tokens_by_its_cost():
    now = [0.0]
    limiter = TenantRateLimiter(rate_rps=2, burst=10, clock=lambda: now[0])
    limiter.acquire("acme", 6)
    limiter.acquire("acme", FEEDBACK_COST)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("acme", 3)  # 2 left: the 1 missing token comes back in 0.5 s
    assert refused.value.retry_after_s == 1 and "counts as 3" in refused.value.message
    assert admitted(limiter, "acme", 5) == 2  # the refused call took nothing
    now[0] += 3.0  # 6 tokens back
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("acme", 8)
    assert refused.value.retry_after_s == 1  # 2 tokens missing at 2/s


def test_a_cost_over_the_bucket_takes_the_whole_bucket():
    """So that a long report can always pass, once the tenant has not spent anything for a while."""
    now = [0.0]
    limiter = TenantRateLimiter(rate_rps=1, burst=20, workers=2, clock=lambda: now[0])  # 10 per worker
    limiter.acquire("acme", report_cost(dt.datetime(2026, 1, 1), dt.datetime(2026, 3, 1)))  # 590 tokens
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("acme")
    assert refused.value.retry_after_s == 2  # 0.5 tokens/s per worker
    now[0] += 20.0
    limiter.acquire("acme", 10_000)


@pytest.mark.parametrize(
    ("since", "until", "cost"),
    [
        ("2026-11-01T00:00:00", "2026-11-01T00:00:01", 10),  # a second of a day counts the day
        ("2026-11-01T00:00:00", "2026-11-02T00:00:00", 10),
        ("2026-11-01T00:00:00", "2026-11-02T00:00:01", 20),
        ("2026-11-01T00:00:00", "2027-02-01T00:00:00", 920),  # the longest window: 92 days
    ],
)
def test_a_report_costs_ten_per_started_day(since, until, cost):
    assert report_cost(dt.datetime.fromisoformat(since), dt.datetime.fromisoformat(until)) == cost
    assert REPORT_COST_PER_DAY == 10 and FEEDBACK_COST == 2 and PREDICT_COST == 1


def test_reports_and_feedback_are_charged_by_their_cost_over_http(db_router):
    """The real routes with a real database: a 2-day report takes 20 tokens, feedback 2, a
    prediction 1; the call that finds the bucket short gets 429 with Retry-After."""
    router, _ = db_router
    now = [0.0]
    router.runtime.limiter = TenantRateLimiter(rate_rps=1, burst=25, clock=lambda: now[0])
    today = dt.datetime.now(dt.UTC).date()
    report = f"/v1/models/intents/report?since={today - dt.timedelta(days=1)}&until={today + dt.timedelta(days=1)}"
    response = router.client.post(
        "/v1/models/intents/predict",
        data=json.dumps({"text": "what is my balance"}),
        content_type="application/json",
        headers={"X-Request-ID": "rl-1"},
    )
    assert response.status_code == 200  # 24 left
    assert router.client.get(report).status_code == 200  # 4 left
    refused = router.client.get(report)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "16" and "counts as 20" in refused.get_json()["error"]["message"]
    feedback = {"data": json.dumps({"label": "oos"}), "content_type": "application/json"}
    assert router.client.post("/v1/predictions/rl-1/feedback", **feedback).status_code == 201  # 2 left
    assert router.client.post("/v1/predictions/rl-1/feedback", **feedback).status_code == 201  # 0 left
    refused = router.client.post("/v1/predictions/rl-1/feedback", **feedback)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
