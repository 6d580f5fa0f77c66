"""The serving version of every model in the store, kept current without a restart.

`refresh()` compares the store's fingerprint (the serving pointers) with the last one seen and
loads what changed into a new dict, then swaps the reference in one assignment: a request
holds the head it started with, so nothing fails during a swap. A version that cannot be loaded
(partial, corrupt) is reported and the model keeps serving its previous version.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from api.errors import NotFound
from heads.artifact import HeadArtifact
from heads.errors import HeadsError
from heads.registry import ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshReport:
    loaded: list[str] = field(default_factory=list)  # "model@version" newly serving
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # model -> why its serving version did not load


class LiveHeads:
    def __init__(self, store: ModelStore):
        self.store = store
        self._heads: dict[str, HeadArtifact] = {}
        self._errors: dict[str, str] = {}
        self._fingerprint: tuple | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, model: str) -> HeadArtifact:
        head = self._heads.get(model)
        if head is None:
            raise NotFound(f"unknown model {model!r}")
        return head

    def snapshot(self) -> dict[str, HeadArtifact]:
        return self._heads

    @property
    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def refresh(self, *, force: bool = False) -> RefreshReport:
        with self._lock:
            fingerprint = self.store.fingerprint()
            if fingerprint == self._fingerprint and not force:
                return RefreshReport()
            current = self._heads
            fresh: dict[str, HeadArtifact] = {}
            report = RefreshReport()
            errors: dict[str, str] = {}
            for model in self.store.models():
                try:
                    version = self.store.serving_version(model)
                    if model in current and current[model].version == version:
                        fresh[model] = current[model]
                        continue
                    fresh[model] = self.store.load(model, version)
                    report.loaded.append(f"{model}@{version}")
                except HeadsError as exc:
                    errors[model] = str(exc)
                    report.failed[model] = str(exc)
                    if model in current:  # keep serving what worked
                        fresh[model] = current[model]
            report.removed.extend(m for m in current if m not in fresh)
            self._heads = fresh
            self._errors = errors
            self._fingerprint = fingerprint
        for name in report.loaded:
            log.info("serving %s", name)
        for model, why in report.failed.items():
            log.error(
                "model %s: serving version not loaded, %s: %s",
                model,
                "kept the previous one" if model in fresh else "not served",
                why,
            )
        return report

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
