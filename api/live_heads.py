"""What serves, per model, kept current without a restart.

For every model the store's serving state (heads/serving.py) names a primary and optionally
shadows, an A/B candidate and a fallback. `refresh()` compares the store's fingerprint with the
last one seen, loads the versions a changed state needs (reusing those already loaded), and
swaps the dict of `ServingSet`s in one assignment: a request keeps the set it started with, so
nothing fails during a swap. A state whose versions cannot all be loaded is reported and the
model keeps serving its previous set.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from api.errors import NotFound
from heads.artifact import HeadArtifact
from heads.errors import HeadsError
from heads.registry import ModelStore
from heads.serving import Candidate, ServingState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingSet:
    state: ServingState
    primary: HeadArtifact
    shadows: tuple[tuple[HeadArtifact, float], ...] = ()
    candidate: tuple[HeadArtifact, Candidate] | None = None
    fallback: HeadArtifact | None = None


@dataclass(frozen=True)
class RefreshReport:
    loaded: list[str] = field(default_factory=list)  # "model: primary@version ..." newly serving
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # model -> why its new state did not load


class LiveHeads:
    def __init__(self, store: ModelStore):
        self.store = store
        self._sets: dict[str, ServingSet] = {}
        self._artifacts: dict[tuple[str, str], HeadArtifact] = {}
        self._errors: dict[str, str] = {}
        self._fingerprint: tuple | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it

    def get(self, model: str) -> ServingSet:
        serving = self._sets.get(model)
        if serving is None:
            raise NotFound(f"unknown model {model!r}")
        return serving

    def snapshot(self) -> dict[str, ServingSet]:
        return self._sets

    @property
    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def answer_labels(self, model: str, version: str) -> set[str]:
        """Every label `version` can answer (its classes and its reject label): what feedback
        about one of its predictions may say. Versions that no longer serve are read from the store."""
        artifact = self._artifacts.get((model, version)) or self.store.load(model, version)
        return set(artifact.labels) | ({artifact.rule.reject_label} if artifact.rule.reject_label else set())

    def _artifact(self, model: str, version: str, cache: dict) -> HeadArtifact:
        key = (model, version)
        if key not in cache:
            cache[key] = self._artifacts.get(key) or self.store.load(model, version)
        return cache[key]

    def _build(self, model: str, state: ServingState, cache: dict) -> ServingSet:
        def load(version: str) -> HeadArtifact:
            return self._artifact(model, version, cache)

        return ServingSet(
            state=state,
            primary=load(state.primary),
            shadows=tuple((load(s.version), s.fraction) for s in state.shadows),
            candidate=(load(state.candidate.version), state.candidate) if state.candidate else None,
            fallback=load(state.fallback) if state.fallback else None,
        )

    def refresh(self, *, force: bool = False) -> RefreshReport:
        with self._lock:
            fingerprint = self.store.fingerprint()
            if fingerprint == self._fingerprint and not force:
                return RefreshReport()
            current = self._sets
            fresh: dict[str, ServingSet] = {}
            cache: dict[tuple[str, str], HeadArtifact] = {}
            report = RefreshReport()
            errors: dict[str, str] = {}
            for model in self.store.models():
                try:
                    state = self.store.serving(model)
                    if state is None:
                        raise HeadsError(f"model {model!r} has versions but none is serving: promote one")
                    if model in current and current[model].state == state:
                        fresh[model] = current[model]
                        for version in state.versions():
                            cache[(model, version)] = self._artifacts[(model, version)]
                        continue
                    fresh[model] = self._build(model, state, cache)
                    report.loaded.append(f"{model}: {describe(state)}")
                except HeadsError as exc:
                    errors[model] = str(exc)
                    report.failed[model] = str(exc)
                    if model in current:  # keep serving what worked
                        fresh[model] = current[model]
                        for version in current[model].state.versions():
                            cache[(model, version)] = self._artifacts[(model, version)]
            report.removed.extend(m for m in current if m not in fresh)
            self._sets, self._artifacts, self._errors = fresh, cache, errors
            self._fingerprint = fingerprint
        for line in report.loaded:
            log.info("serving %s", line)
        for model, why in report.failed.items():
            kept = "kept the previous state" if model in fresh else "not served"
            log.error("model %s: serving state not loaded, %s: %s", model, kept, why)
        return report


def describe(state: ServingState) -> str:
    parts = [f"primary {state.primary}"]
    parts += [f"shadow {s.version} ({s.fraction:g})" for s in state.shadows]
    if state.candidate:
        parts.append(f"candidate {state.candidate.version} ({state.candidate.percent:g}% by {state.candidate.key})")
    if state.fallback:
        parts.append(f"fallback {state.fallback}")
    return ", ".join(parts)
