"""The serving heads of every tenant: MODEL_STORE/<tenant>/<model>/<version>/.

Each tenant folder is a model store of its own (heads/registry.py) with its own LiveHeads, so a
model name is unique within a tenant and two tenants may both have an "intents" model. A request
reaches only the heads of the tenant its API key belongs to: asking for another tenant's model
is, from the caller's side, asking for a model that does not exist.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from api.errors import NotFound
from api.live_heads import LiveHeads, RefreshReport, ServingSet
from heads.registry import TENANT_NAME, ModelStore, check_tenant_name

log = logging.getLogger(__name__)


def tenant_store(root: str | Path, tenant: str) -> ModelStore:
    return ModelStore(Path(root) / check_tenant_name(tenant))


class TenantHeads:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._tenants: dict[str, LiveHeads] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tenant(self, tenant: str) -> LiveHeads | None:
        return self._tenants.get(tenant)

    def get(self, tenant: str, model: str) -> ServingSet:
        heads = self._tenants.get(tenant)
        if heads is None:
            raise NotFound(f"unknown model {model!r}")
        return heads.get(model)

    def snapshot(self, tenant: str) -> dict[str, ServingSet]:
        heads = self._tenants.get(tenant)
        return heads.snapshot() if heads else {}

    def all_sets(self) -> dict[tuple[str, str], ServingSet]:
        return {(t, m): s for t, heads in self._tenants.items() for m, s in heads.snapshot().items()}

    @property
    def errors(self) -> dict[str, str]:
        return {f"{t}/{m}": e for t, heads in self._tenants.items() for m, e in heads.errors.items()}

    def refresh(self, *, force: bool = False) -> dict[str, RefreshReport]:
        """Pick up new tenants and every changed serving state (see LiveHeads.refresh)."""
        with self._lock:
            found = (
                sorted(p.name for p in self.root.iterdir() if p.is_dir() and TENANT_NAME.fullmatch(p.name))
                if self.root.is_dir()
                else []
            )
            tenants = {t: self._tenants.get(t) or LiveHeads(ModelStore(self.root / t)) for t in found}
            self._tenants = tenants
        return {t: heads.refresh(force=force) for t, heads in tenants.items()}

    def start_polling(self, interval_s: float, on_tick=None) -> None:
        """Refresh every `interval_s` in a daemon thread (one per process). `on_tick()` runs after
        each refresh (the metrics use it to publish gauges)."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
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
