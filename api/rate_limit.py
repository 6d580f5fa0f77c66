"""Per-tenant rate limits: a token bucket per tenant, refilled at `rate_rps`, holding `burst`.

Each gunicorn worker keeps its own buckets with 1/workers of the tenant's rate and burst, so the
whole router allows about the configured rate without any shared state on the request path (the
load balancer spreads a tenant's requests over the workers). Over the limit: 429 with the
Retry-After that the bucket needs to refill one request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from api.errors import ApiError


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class TenantRateLimiter:
    def __init__(
        self,
        *,
        rate_rps: float,
        burst: int,
        workers: int = 1,
        limits_for: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._clock = clock
        self._rate, self._burst, self._workers = rate_rps, burst, max(1, workers)
        self._limits_for = limits_for or (lambda tenant: None)
        self._buckets: dict[str, list[float]] = {}  # tenant -> [tokens, last refill]
        self._lock = threading.Lock()

    def _limits(self, tenant: str) -> tuple[float, float]:
        custom = self._limits_for(tenant)
        rate = (getattr(custom, "rate_rps", None) or self._rate) / self._workers
        burst = max(1.0, (getattr(custom, "burst", None) or self._burst) / self._workers)
        return rate, burst

    def acquire(self, tenant: str) -> None:
        rate, burst = self._limits(tenant)
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[tenant] = [tokens, now]
                retry = max(1, math.ceil((1.0 - tokens) / rate))
                error = RateLimited(f"tenant {tenant!r} is over its rate limit of {rate * self._workers:g} requests/s")
                error.retry_after_s = retry
                raise error
            self._buckets[tenant] = [tokens - 1.0, now]
