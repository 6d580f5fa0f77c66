"""Per-tenant token buckets (api/rate_limit.py)."""

from __future__ import annotations

import pytest

from api.keys import TenantLimits
from api.rate_limit import RateLimited, TenantRateLimiter


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
