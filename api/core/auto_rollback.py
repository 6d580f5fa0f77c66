"""The automatic rollback job: undoes a guarded promotion whose new primary does harm.

Elected once per deployment (the rollback advisory lock, inferencedb/leader.py) and run by the
MonitoringLoop every `interval_s`. For each model whose serving state has a guard and a watch
(heads/rollback_guard.py), until the watch's window is over: read the new primary's rows since
the last run (inferencedb/release_watch.py; each row once, up to `settle_s` ago so that rows on
their way to the database are not skipped), add them up, and ask `breach()`. On a crossed bound:

- restore the state from before the promotion (`serving_state.undo_promotion`, under the store's
  lock: a state an operator changed since is left alone, and a promotion is undone at most once,
  since the restored state no longer holds its watch);
- record the decision with its figures in the model's decisions.jsonl;
- count it (router_auto_rollbacks), log it, and reload this worker's heads at once; the other
  workers and routers follow the store's generation.

A watch whose window ends without a crossed bound is recorded once as "kept". The job only reads
the database (bounded by its timeout) and writes the store; it never touches a request.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from api.core import metrics
from heads import serving_state
from heads.decisions import read_decisions, record_decision
from heads.errors import HeadsError
from heads.rollback_guard import Breach, Guard, Watch, breach, figures
from inferencedb.database import Database
from inferencedb.errors import DatabaseUnavailable
from inferencedb.leader import Leadership
from inferencedb.release_watch import ReleaseCounts, count_slice

log = logging.getLogger(__name__)

DECISION_KIND = "auto_rollback"


@dataclass(frozen=True)
class _Progress:
    counts: ReleaseCounts
    upto: dt.datetime  # rows created before this are counted


class AutoRollback:
    def __init__(
        self,
        database: Database,
        heads,
        *,
        interval_s: float = 5.0,
        settle_s: float = 2.0,
        leadership: Leadership | None = None,
    ):
        """`heads`: the router's TenantHeads. `leadership`: runs only while this process holds it
        (None: always, a lone process)."""
        self._db = database
        self._heads = heads
        self._interval = interval_s
        self._settle = dt.timedelta(seconds=settle_s)
        self._leadership = leadership
        self._next_run = 0.0
        self._progress: dict[tuple[str, str, Watch], _Progress] = {}
        self._finished: set[tuple[str, str, Watch]] = set()  # rolled back, kept, or left to an operator

    def run_if_due(self) -> None:
        if time.monotonic() < self._next_run:
            return
        self._next_run = time.monotonic() + self._interval
        pending = [
            (tenant, model, serving)
            for (tenant, model), serving in self._heads.watched_sets().items()
            if serving.state.guard is not None
            and serving.state.watch is not None
            and (tenant, model, serving.state.watch) not in self._finished
            # else loaded while the store was being changed: the next refresh settles it
            and serving.primary.version == serving.state.watch.version
        ]
        # Nothing under watch (the usual case): no election either, so an idle deployment's
        # workers do not open a database session every few seconds to ask for the lock.
        if not pending or (self._leadership is not None and not self._leadership.held()):
            self._progress.clear()
            return
        now = dt.datetime.now(dt.UTC)
        watched = set()
        for tenant, model, serving in pending:
            state = serving.state
            key = (tenant, model, state.watch)
            watched.add(key)
            try:
                self._check(key, state.guard, serving.primary.rule.reject_label, now)
            except DatabaseUnavailable as exc:
                log.warning("automatic rollback checks skipped until the next run: %s", exc)
                return
            except (HeadsError, OSError) as exc:  # this model's store: the others go on
                log.warning("automatic rollback check of %s/%s failed: %s", tenant, model, exc)
        for key in set(self._progress) - watched:
            del self._progress[key]

    def _check(self, key: tuple[str, str, Watch], guard: Guard, reject_label: str | None, now: dt.datetime) -> None:
        tenant, model, watch = key
        if self._decided(tenant, model, watch):
            self._finished.add(key)
            return
        end = watch.ends(guard)
        progress = self._progress.get(key) or _Progress(ReleaseCounts(), watch.started)
        until = min(now - self._settle, end)
        if until > progress.upto:
            counts = count_slice(
                self._db,
                tenant=tenant,
                model=model,
                version=watch.version,
                previous=watch.previous,
                reject_label=reject_label,
                watch_since=watch.started,
                since=progress.upto,
                until=until,
            )
            progress = _Progress(progress.counts + counts, until)
        self._progress[key] = progress
        crossed = breach(guard, progress.counts)
        if crossed is not None:
            self._roll_back(key, guard, crossed, progress.counts)
        elif progress.upto >= end:
            self._keep(key, guard, progress.counts)

    def _decided(self, tenant: str, model: str, watch: Watch) -> bool:
        """Whether a decision on this promotion is already recorded (by an earlier leader)."""
        if (tenant, model, watch) in self._progress:
            return False  # this process has been counting it: it would know
        store = self._heads.store(tenant)
        return any(
            entry.get("kind") == DECISION_KIND and entry.get("evidence", {}).get("since") == watch.since
            for entry in read_decisions(store.model_dir(model))
        )

    def _evidence(self, watch: Watch, guard: Guard, counts: ReleaseCounts) -> dict:
        return {"since": watch.since, "previous": watch.previous, "guard": guard.to_dict(), **figures(counts)}

    def _roll_back(self, key, guard: Guard, crossed: Breach, counts: ReleaseCounts) -> None:
        tenant, model, watch = key
        store = self._heads.store(tenant)
        reason = f"automatic rollback of {watch.version} to {watch.previous}: {crossed.reason()}"
        try:
            store.change_serving(
                model, lambda state: serving_state.undo_promotion(state, watch), reason=reason, rollback=True
            )
        except serving_state.StateMoved as exc:
            self._finished.add(key)
            log.info("%s/%s: %s would be rolled back (%s), but %s", tenant, model, watch.version, reason, exc)
            return
        self._finished.add(key)  # before anything else can fail: a promotion is undone once
        metrics.AUTO_ROLLBACKS.labels(f"{tenant}/{model}").inc()
        log.warning("%s/%s: %s", tenant, model, reason)
        evidence = {**self._evidence(watch, guard, counts), "bound": crossed.bound, "limit": crossed.limit}
        record_decision(
            store.model_dir(model),
            kind=DECISION_KIND,
            version=watch.version,
            outcome="rolled_back",
            reason=reason,
            evidence=evidence,
        )
        self._heads.refresh()

    def _keep(self, key, guard: Guard, counts: ReleaseCounts) -> None:
        tenant, model, watch = key
        self._finished.add(key)
        reason = f"{watch.version} kept: no bound crossed in the {guard.window_s:g}s window ({counts.asked} items)"
        record_decision(
            self._heads.store(tenant).model_dir(model),
            kind=DECISION_KIND,
            version=watch.version,
            outcome="kept",
            reason=reason,
            evidence=self._evidence(watch, guard, counts),
        )
        log.info("%s/%s: %s", tenant, model, reason)

    def close(self) -> None:
        if self._leadership is not None:
            self._leadership.close()
