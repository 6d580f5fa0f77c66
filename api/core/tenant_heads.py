"""The serving heads of every tenant: MODEL_STORE/<tenant>/<model>/<version>/ (heads/layout.py).

Each tenant folder is a model store of its own (heads/registry.py) with its own LiveHeads, so a
model name is unique within a tenant and two tenants may both have an "intents" model. A request
reaches only the heads of the tenant its API key belongs to: asking for another tenant's model
is, from the caller's side, asking for a model that does not exist.

Each worker process polls on its own (`start_polling`), and a poll costs next to nothing while
nothing changes: it looks at the store's generation (heads/generation.py, one file that the
registry bumps at every serving change in any tenant) and scans the models only when it moved,
or when a rescan is due, which also retries models that failed to load and catches changes made
without the registry (a store synced file by file, a permission repaired in place). A scan costs
one stat per model, 0.1-0.3 s at 10,000 models: rescans come every `rescan_interval_s` while the
store settles (for `settle_s` after a scan saw it change, e.g. a serving pointer that an S3 sync
delivers after the generation file, and while a model fails to load), and every
`settled_rescan_interval_s` once it has settled. The operator's reload reaches every worker
through the router's reload generation (reload_generation.py): `reload_everywhere` bumps it and
reloads this worker; every other worker's next `poll` sees it moved and reloads everything too.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from api.core.live_heads import EVERY_MODEL, LiveHeads, LoadedServing, RefreshReport
from api.core.reload_generation import ReloadGeneration
from api.errors import NotFound
from heads import layout
from heads.errors import RegistryError
from heads.generation import STORE_FILE, GenerationFile
from heads.known_checksums import KnownChecksums
from heads.registry import ModelStore

log = logging.getLogger(__name__)


EVERY_TENANT = "*"  # the tenant of a failure to list MODEL_STORE itself


@dataclass(frozen=True)
class LoadFailure:
    """A model whose serving state does not load (model "*": the tenant's models cannot be listed;
    tenant "*": MODEL_STORE cannot be listed)."""

    tenant: str
    model: str
    reason: str  # one short line, paths relative to MODEL_STORE
    serving: str | None  # the primary still served from before the failure, if any

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_UNSEEN = object()  # a store generation stamp that no stamp equals


class TenantHeads:
    def __init__(
        self,
        root: str | Path,
        *,
        generation: ReloadGeneration | None = None,
        rescan_interval_s: float = 30.0,
        settled_rescan_interval_s: float = 300.0,
        settle_s: float = 120.0,
        known_checksums: KnownChecksums | None = None,
    ):
        """`generation`: the reload generation shared by the router's workers; None for a router
        of one process, whose reload reaches all of it. `rescan_interval_s`: how often a poll scans
        the models although the store's generation did not move, while the store settles (for
        `settle_s` after a scan found a change, start included, and while a model fails to load);
        `settled_rescan_interval_s` (at least `rescan_interval_s`) once it has settled.
        `known_checksums`: the weights the router's processes verified already (heads/known_checksums.py)."""
        self.root = Path(root)
        self._known_checksums = known_checksums
        self._generation = generation
        self._store_generation = GenerationFile(self.root / STORE_FILE)
        self._scanned_stamp: object = _UNSEEN  # the store generation's stamp before the last scan
        self._rescan_interval_s = rescan_interval_s
        self._settled_rescan_interval_s = max(settled_rescan_interval_s, rescan_interval_s)
        self._settle_s = settle_s
        self._changed_at = time.monotonic()  # when a scan last found a change (start counts as one)
        self._next_rescan = 0.0
        self._tenants: dict[str, LiveHeads] = {}
        self._root_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tenant(self, tenant: str) -> LiveHeads | None:
        return self._tenants.get(tenant)

    def store(self, tenant: str) -> ModelStore:
        """The tenant's models in MODEL_STORE, whether or not any of them serves yet."""
        return ModelStore.for_tenant(self.root, tenant)

    def get(self, tenant: str, model: str) -> LoadedServing:
        heads = self._tenants.get(tenant)
        if heads is None:
            raise NotFound(f"unknown model {model!r}")
        return heads.get(model)

    def snapshot(self, tenant: str) -> dict[str, LoadedServing]:
        heads = self._tenants.get(tenant)
        return heads.snapshot() if heads else {}

    def count(self) -> int:
        """Models serving, over every tenant (without building all_sets())."""
        return sum(len(heads.snapshot()) for heads in list(self._tenants.values()))

    def all_sets(self) -> dict[tuple[str, str], LoadedServing]:
        """What every model of every tenant serves, keyed (tenant, model)."""
        return {(t, m): s for t, heads in self._tenants.items() for m, s in heads.snapshot().items()}

    def watched_sets(self) -> dict[tuple[str, str], LoadedServing]:
        """The models under a rollback guard's watch, keyed (tenant, model) (LiveHeads.watched)."""
        return {(t, m): s for t, heads in self._tenants.items() for m, s in heads.watched().items()}

    @property
    def errors(self) -> dict[str, str]:
        """Why each model does not load, keyed "tenant/model"."""
        return {f"{f.tenant}/{f.model}": f.reason for f in self.failures()}

    def failures(self) -> list[LoadFailure]:
        """Every model that does not load, whether or not it still serves an earlier state."""
        out = [LoadFailure(EVERY_TENANT, EVERY_MODEL, self._root_error, None)] if self._root_error else []
        for tenant, heads in sorted(self._tenants.items()):
            loaded = heads.snapshot()
            for model, why in sorted(heads.errors.items()):
                serving = loaded[model].primary.version if model in loaded else None
                out.append(LoadFailure(tenant, model, why, serving))
        return out

    @property
    def unchecked(self) -> int:
        """Serving heads whose weights' checksum is still to be computed (heads/weights_check.py)."""
        return sum(heads.unchecked for heads in list(self._tenants.values()))

    def check_weights(self, budget_s: float | None = None) -> int:
        """Compute the weights' checksums that loading left for later, for up to `budget_s`
        seconds (None: all of them); see LiveHeads.check_weights. Returns how many are left."""
        deadline = None if budget_s is None else time.monotonic() + budget_s
        tenants = list(self._tenants.values())
        left = sum(heads.check_weights(deadline) for heads in tenants)
        if any(heads.errors for heads in tenants):  # a withdrawn model is retried as a failed load is
            with self._lock:
                self._next_rescan = min(self._next_rescan, time.monotonic() + self._rescan_interval_s)
        return left

    def _store_stamp(self) -> object:
        try:
            return self._store_generation.stamp()
        except OSError:
            return _UNSEEN  # cannot be examined: scan at every poll

    def refresh(self, *, force: bool = False) -> dict[str, RefreshReport]:
        """Pick up new tenants and every changed serving state (see LiveHeads.refresh). Never
        raises: when MODEL_STORE cannot be listed, the tenants found before keep serving."""
        with self._lock:
            # Read before the scan: a change during it moves the generation again, so the next
            # poll scans again.
            stamp = self._store_stamp()
            if stamp != self._scanned_stamp:
                self._changed_at = time.monotonic()
            self._scanned_stamp = stamp
            # The soon one until the scan has said whether the store settled (also when it raises).
            self._next_rescan = time.monotonic() + self._rescan_interval_s
            try:
                found = layout.tenants(self.root)
            except RegistryError as exc:
                if str(exc) != self._root_error:
                    log.error(
                        "cannot list the tenants; the %d found before keep serving; retried at every scan: %s",
                        len(self._tenants),
                        exc,
                    )
                self._root_error = str(exc)
                found = list(self._tenants)
            else:
                self._root_error = None
            tenants = {
                t: self._tenants.get(t) or LiveHeads(self.store(t), known_checksums=self._known_checksums)
                for t in found
            }
            self._tenants = tenants
        # tenants in an order of this process's own, as LiveHeads.refresh does with models
        refreshed = {t: tenants[t].refresh(force=force) for t in random.sample(list(tenants), len(tenants))}
        reports = {t: refreshed[t] for t in tenants}
        with self._lock:  # the poller and an operator's reload may both scan
            self._schedule_rescan(reports)
        if any(report.loaded for report in reports.values()):
            # Thousands of loaded heads are millions of long-lived objects that the cyclic garbage
            # collector would walk at every full collection (a pause of a good part of a second at
            # 10,000 heads, in the middle of requests). They hold no cycles: move them out of its
            # reach, after a collection (of the objects not frozen yet: cheap after the first) so
            # that no cyclic garbage is frozen with them.
            gc.collect()
            gc.freeze()
        return reports

    def _schedule_rescan(self, reports: dict[str, RefreshReport]) -> None:
        """Soon while the store settles: a scan that loaded or removed something found a change
        (one made around the registry, or the rest of a sync), and a model that fails to load may
        be completed by the next sync or repaired in place. Rarely once it has settled."""
        now = time.monotonic()
        if any(report.loaded or report.removed for report in reports.values()):
            self._changed_at = now
        settling = (
            now - self._changed_at < self._settle_s
            or self._root_error
            or any(heads.errors for heads in self._tenants.values())
        )
        self._next_rescan = now + (self._rescan_interval_s if settling else self._settled_rescan_interval_s)

    @property
    def reload_generation(self) -> int:
        """The router's reload generation this worker applied last (0: none asked since it started)."""
        return self._generation.applied if self._generation else 0

    def poll(self) -> dict[str, RefreshReport]:
        """One poll: every serving state when the router's reload generation moved since this
        worker applied it; else what changed (see LiveHeads.refresh) when the store's generation
        moved or a rescan is due; else nothing (no report)."""
        asked = self._generation.pending() if self._generation else None
        stamp = self._store_stamp()
        # Without a generation file (a store no registry of this version changed yet) every poll scans.
        if asked is None and stamp is not None and stamp is not _UNSEEN and stamp == self._scanned_stamp:
            if time.monotonic() < self._next_rescan:
                return {}
        reports = self.refresh(force=asked is not None)
        if asked is not None:
            self._generation.applied = asked
            log.info("reload generation %d asked by an operator: every serving state read again", asked)
        return reports

    def reload_everywhere(self) -> tuple[int | None, dict[str, RefreshReport]]:
        """The operator's reload: bump the router's reload generation, so that every other worker
        reloads at its next poll, and reload this worker now. Returns the generation (None without
        one) and this worker's reports. OSError when the generation cannot be written."""
        generation = self._generation.bump() if self._generation else None
        reports = self.refresh(force=True)
        if generation is not None:
            self._generation.applied = generation
        return generation, reports

    def start_polling(self, interval_s: float, on_tick=None) -> None:
        """`poll()` every `interval_s` in a daemon thread (one per process), then check weights
        that loading left unchecked for up to half the interval (a first start's backlog spread
        over the following seconds, not a stall of serving changes). `on_tick()` runs after each
        poll (the metrics use it to publish gauges)."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.poll()
                    self.check_weights(interval_s / 2)
                    if on_tick is not None:
                        on_tick()
                except Exception:  # noqa: BLE001 - the poller must outlive any one bad refresh
                    log.exception("refreshing heads failed")

        self._thread = threading.Thread(target=loop, name="heads-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
