"""How long a request may take, and how much of it is kept for the fallback.

One deadline covers the whole answer, from the moment the router received the request to the
moment the answer is ready: the caller's X-Request-Timeout-Ms, else the model's default
(API_MODEL_DEADLINES_MS, keyed "<tenant>/<model>" or "<model>"), else the router's default
(API_EMBED_TIMEOUT_S); whichever applies is capped by API_MAX_DEADLINE_MS.

When a model has a fallback, the primary's embedding call does not get the whole deadline: it
gets the deadline minus a reserve, the time the fallback is expected to need to answer in its
place. The reserve is API_FALLBACK_RESERVE_MS (15 ms: what nothing has measured yet, as for a
worker's first fallback answer, and the scheduling jitter of a busy worker) plus two measures,
each a peak that decays by `PEAK_DECAY` per answer, so that one slow answer (a cold cache, a
pause of the process) raises the reserve at once and is forgotten over the next few dozen:

- the lateness of the primary's failure past its share of the deadline: a timed-out gRPC call
  returns 2-4 ms late on a quiet machine, more from a worker starved of CPU. It belongs to the
  worker, not to a model, so it is kept once for all: a fallback answering for the first time
  (a new model, one of 10,000) has the worker's measure, not none;
- the fallback's own cost, per fallback version: from the moment the primary gave up to the
  answer sent, so the writing of the response counts as well as the fallback's work.

On an idle machine an n-gram fallback costs about a millisecond, so the primary loses only a few
milliseconds of its budget; on a loaded one the reserve grows with what the answers actually cost.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

PEAK_DECAY = 0.95
# The chosen head always keeps at least this share of the deadline: one pause of the process
# (seconds, while the fallback answered) must not send every request to the fallback until the
# peak has decayed.
MAX_RESERVE_SHARE = 0.5


class Deadlines:
    def __init__(
        self,
        *,
        default_s: float,
        per_model_ms: Mapping[str, int] | None = None,
        max_s: float = 60.0,
        reserve_floor_s: float = 0.015,
    ):
        self._default_s = default_s
        self._per_model_ms = dict(per_model_ms or {})
        self._max_s = max_s
        self._floor_s = reserve_floor_s
        self._peaks: dict[tuple[str, str, str], float] = {}  # (tenant, model, version) -> seconds
        self._lateness_peak = 0.0  # seconds, the whole worker's
        self._lock = threading.Lock()

    def budget_s(self, tenant: str, model: str, requested_s: float | None) -> float:
        """Seconds the whole answer may take: the caller's request, else the model's default,
        else the router's, capped by the maximum."""
        if requested_s is None:
            ms = self._per_model_ms.get(f"{tenant}/{model}", self._per_model_ms.get(model))
            requested_s = ms / 1000 if ms is not None else self._default_s
        return min(requested_s, self._max_s)

    def reserve_s(self, tenant: str, model: str, version: str, budget_s: float | None = None) -> float:
        """Seconds kept for the fallback `version` of `model` to answer; at most
        MAX_RESERVE_SHARE of `budget_s` when given."""
        reserve = self._floor_s + self._lateness_peak + self._peaks.get((tenant, model, version), 0.0)
        return reserve if budget_s is None else min(reserve, MAX_RESERVE_SHARE * budget_s)

    def observe(self, tenant: str, model: str, version: str, cost_s: float, lateness_s: float = 0.0) -> None:
        """The fallback `version` answered `cost_s` seconds after the primary gave up, which was
        `lateness_s` after the primary's share of the deadline had passed (0: it failed in time)."""
        key = (tenant, model, version)
        with self._lock:
            self._peaks[key] = max(cost_s, self._peaks.get(key, 0.0) * PEAK_DECAY)
            self._lateness_peak = max(lateness_s, self._lateness_peak * PEAK_DECAY)
