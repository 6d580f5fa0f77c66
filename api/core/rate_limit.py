"""Per-tenant rate limits: a token bucket per tenant, refilled at `rate_rps`, holding `burst`.

A call counts as a number of requests (tokens) by the work it causes; the table is also in the
OpenAPI description and the README:

    predict    1 (one embedding call for up to max_texts texts)
    feedback   2 (a lookup of the prediction and an upsert)
    explain    1 + ceil(words / max_texts) (one embedding call of the text and one variant per
               word: every max_texts variants count as one more predict; 2 up to max_texts words)
    report     10 per day of the window, started days counted whole (six aggregate queries,
               each scanning every prediction of the model in the window)

A cost larger than a bucket takes the whole bucket, so every call can eventually pass. Each
gunicorn worker keeps its own buckets with 1/workers of the tenant's rate and burst, so the whole
router allows about the configured rate without any shared state on the request path (the load
balancer spreads a tenant's requests over the workers). Over the limit: 429 with the Retry-After
that the bucket needs to refill the call's cost.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable

from api.errors import ApiError

PREDICT_COST = 1.0
FEEDBACK_COST = 2.0
REPORT_COST_PER_DAY = 10.0


def explain_cost(words: int, max_texts: int) -> float:
    """Tokens for explaining a text of `words` words (one variant each) with API_MAX_TEXTS = max_texts."""
    return PREDICT_COST + math.ceil(words / max_texts)


def report_cost(since: dt.datetime, until: dt.datetime) -> float:
    """Tokens for a report over [since, until): every started day of the window counts whole."""
    return REPORT_COST_PER_DAY * max(1, math.ceil((until - since) / dt.timedelta(days=1)))


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

    def acquire(self, tenant: str, cost: float = PREDICT_COST) -> None:
        """Take `cost` tokens from the tenant's bucket, or raise RateLimited (429, Retry-After)."""
        rate, burst = self._limits(tenant)
        needed = min(cost, burst)
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens < needed:
                self._buckets[tenant] = [tokens, now]
                error = RateLimited(
                    f"tenant {tenant!r} is over its rate limit of {rate * self._workers:g} requests/s "
                    f"(this call counts as {cost:g})"
                )
                error.retry_after_s = max(1, math.ceil((needed - tokens) / rate))
                raise error
            self._buckets[tenant] = [tokens - needed, now]
