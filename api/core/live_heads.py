"""What serves, per model, kept current without a restart.

For every model the store's serving state (heads/serving_state.py) names a primary and optionally
shadows, an A/B candidate and a fallback. `refresh()` compares the store's fingerprint with the
last one seen, loads the versions a changed state needs (reusing those already loaded), and
swaps the dict of `LoadedServing`s in one assignment: a request keeps the one it started with, so
nothing fails during a swap.

One bad model never takes the others down: a model whose state does not load, for any reason (an
unreadable folder, a malformed manifest or pointer, a corrupt file), keeps serving its previous
heads, or is absent and answers 404 with the reason if it never loaded. It is reported in `errors`
(logged once per distinct reason) and retried at every refresh until it loads.

A model that does not serve yet in this process is loaded without hashing its weights (at 10,000
heads that was most of a first start): its versions carry the pending check, which their first
answer, or `check_weights()` in the background, computes (heads/weights_check.py). Weights that
do not match take the model out of serving with the reason, as a failed load leaves it; its
retries, like every load of a model that serves already, check the weights before they serve.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

from api.errors import Conflict, NotFound
from heads import layout
from heads.artifact import HeadArtifact
from heads.errors import ArtifactError, HeadsError
from heads.known_checksums import KnownChecksums
from heads.registry import ModelStore
from heads.serving_state import Candidate, ServingState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedServing:
    """One model's serving state with the versions it names loaded: what answers its requests."""

    state: ServingState
    primary: HeadArtifact
    shadows: tuple[tuple[HeadArtifact, float], ...] = ()
    candidate: tuple[HeadArtifact, Candidate] | None = None
    fallback: HeadArtifact | None = None

    def heads(self) -> list[HeadArtifact]:
        """Every version this state names: primary, candidate, fallback, shadows."""
        named = [self.primary, *([self.candidate[0]] if self.candidate else [])]
        return named + ([self.fallback] if self.fallback else []) + [head for head, _ in self.shadows]

    def without_embedder(self) -> str:
        """What this model answers while the embedding service is unreachable: "all" (its primary
        and A/B candidate need no embeddings), "fallback" (its fallback needs none and answers in
        their place, see Predictor.predict), or "none"."""
        answering = [self.primary, *([self.candidate[0]] if self.candidate else [])]
        if not any(head.needs_embeddings for head in answering):
            return "all"
        if self.fallback is not None and not self.fallback.needs_embeddings:
            return "fallback"
        return "none"


@dataclass(frozen=True)
class RefreshReport:
    loaded: list[str] = field(default_factory=list)  # "model: primary@version ..." newly serving
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # model -> why its new state did not load


EVERY_MODEL = "*"  # the key of a failure to list the tenant's models at all
REASON_CHARS = 300


class LiveHeads:
    def __init__(self, store: ModelStore, *, known_checksums: KnownChecksums | None = None):
        """`known_checksums`: the host's record of weights already verified, shared by the
        router's processes (heads/known_checksums.py); None hashes every head's weights."""
        self.store = store
        self._known_checksums = known_checksums
        self._serving: dict[str, LoadedServing] = {}
        self._watched: frozenset[str] = frozenset()  # models whose promotion a rollback guard watches
        self._artifacts: dict[tuple[str, str], HeadArtifact] = {}
        self._errors: dict[str, str] = {}
        self._seen: dict[str, tuple] = {}  # each model's entry in the store's fingerprint, as last read
        self._fingerprint: tuple | None = None  # the whole fingerprint, as last read
        # (model, artifact) of the serving heads whose weights' checksum is still to be checked
        # (or failed at a request), in this process's own order
        self._unchecked: list[tuple[str, HeadArtifact]] = []
        self._lock = threading.Lock()  # one refresh at a time; readers never take it

    def get(self, model: str) -> LoadedServing:
        serving = self._serving.get(model)
        if serving is None:
            why = self._errors.get(model) or self._errors.get(EVERY_MODEL)
            raise NotFound(f"model {model!r} failed to load: {why}" if why else f"unknown model {model!r}")
        return serving

    def snapshot(self) -> dict[str, LoadedServing]:
        return self._serving

    def watched(self) -> dict[str, LoadedServing]:
        """The models whose latest promotion a rollback guard watches (heads/rollback_guard.py):
        kept at each refresh, so the rollback job never looks at every model of a large store."""
        serving = self._serving
        return {m: serving[m] for m in self._watched if m in serving}

    @property
    def errors(self) -> dict[str, str]:
        """Model -> why its serving state does not load (EVERY_MODEL: the models cannot be listed).
        A model here may still serve its previous state: see snapshot()."""
        return dict(self._errors)

    def answer_labels(self, model: str, version: str) -> set[str]:
        """Every label `version` can answer (its classes and its reject label): what feedback
        about one of its predictions may say. Versions that no longer serve are read from the store;
        one that no longer loads there (deleted, or broken) is a Conflict, never a server error."""
        artifact = self._artifacts.get((model, version))
        if artifact is None:
            try:
                artifact = self.store.load(model, version)
            except HeadsError as exc:
                raise Conflict(
                    f"{model} version {version}, which answered this prediction, no longer loads ({exc}); "
                    "its labels cannot be checked"
                ) from None
        return set(artifact.labels) | ({artifact.rule.reject_label} if artifact.rule.reject_label else set())

    @property
    def unchecked(self) -> int:
        """Serving heads whose weights' checksum is still to be computed (or failed at a request,
        not yet withdrawn)."""
        return sum(1 for _, artifact in self._unchecked if _unchecked(artifact))

    def _artifact(self, model: str, version: str, cache: dict, *, defer_check: bool) -> HeadArtifact:
        key = (model, version)
        if key not in cache:
            reused = self._artifacts.get(key)
            if reused is not None and reused.weights_check is not None:
                if reused.weights_check.failure is not None:
                    reused = None  # failed at a request: loaded anew below (and checked at once)
                elif not defer_check:  # a state that must serve checked weights only
                    try:
                        reused.weights_check.ensure()
                    except ArtifactError:
                        reused = None  # loaded anew below: a replaced file may match, a corrupt one is refused
            cache[key] = (
                reused
                or self.store.load(
                    model,
                    version,
                    verify_reports=False,
                    known_checksums=self._known_checksums,
                    defer_weights_check=defer_check,
                ).for_serving()
            )
        return cache[key]

    def _build(self, model: str, state: ServingState, cache: dict, *, defer_check: bool) -> LoadedServing:
        def load(version: str) -> HeadArtifact:
            return self._artifact(model, version, cache, defer_check=defer_check)

        return LoadedServing(
            state=state,
            primary=load(state.primary),
            shadows=tuple((load(s.version), s.fraction) for s in state.shadows),
            candidate=(load(state.candidate.version), state.candidate) if state.candidate else None,
            fallback=load(state.fallback) if state.fallback else None,
        )

    def refresh(self, *, force: bool = False) -> RefreshReport:
        """Load what changed in the store. Never raises: a model whose state does not load, for any
        reason, keeps serving what it served (or stays absent) and is reported in `errors`.

        A poll reads the serving state of the models whose entry in the store's fingerprint
        changed, and of those that failed: a failed one is retried at every scan until it loads,
        so a state that arrived before its versions' files (a store synced file by file) serves
        once they are there, and a fix in place (a permission, a manifest) at the next poll, though
        no serving pointer changed. The healthy models that did not change are not read again.
        `force` reads every model's state (the operator's reload)."""
        with self._lock:
            try:
                fingerprint = self.store.fingerprint()
            except Exception as exc:  # noqa: BLE001 - an unlistable tenant folder: keep serving what loaded
                report = RefreshReport(failed={EVERY_MODEL: self._reason(exc)})
                self._note(EVERY_MODEL, report.failed[EVERY_MODEL], exc)
                self._errors = {**self._errors, **report.failed}
                return report
            if fingerprint == self._fingerprint and not force and not self._errors:
                # The common rescan of a large store: nothing moved, found by one comparison in C
                # instead of a Python step per model.
                return RefreshReport()
            entries = {entry[0]: entry for entry in fingerprint}
            current = self._serving
            changed = [m for m, e in entries.items() if force or m in self._errors or self._seen.get(m) != e]
            gone = [m for m in current if m not in entries]
            if not changed and not gone and not self._errors:
                return RefreshReport()
            fresh = {m: serving for m, serving in current.items() if m in entries}
            cache: dict[tuple[str, str], HeadArtifact] = {}  # versions loaded by this refresh
            report = RefreshReport(removed=gone)
            # In an order of this process's own: workers that start together then verify different
            # heads' weights first and skip what the other recorded (heads/known_checksums.py),
            # instead of hashing every file in step.
            for model in random.sample(changed, len(changed)):
                try:
                    state = self.store.serving(model)
                    if state is None:
                        raise HeadsError(f"model {model!r} has versions but none is serving: promote one")
                    if model in current and current[model].state == state:
                        continue
                    # Unchecked weights only where nothing served before (a first load): a new
                    # state of a serving model, or a retry, serves only once its weights match.
                    first = model not in current and model not in self._errors
                    fresh[model] = self._build(model, state, cache, defer_check=first)
                    report.loaded.append(f"{model}: {describe(state)}")
                # One model's failure of any kind (a HeadsError, or an OSError, KeyError... that the
                # loader did not foresee) stays with that model: the others load and serve; what it
                # served before (in `fresh` already) keeps serving.
                except Exception as exc:  # noqa: BLE001
                    report.failed[model] = self._reason(exc)
                    self._note(model, report.failed[model], exc)
            artifacts = {
                key: cache.get(key) or self._artifacts[key]
                for model, serving in fresh.items()
                for key in ((model, version) for version in serving.state.versions())
            }
            recovered = [m for m in self._errors if m not in report.failed and (m in fresh or m == EVERY_MODEL)]
            unchecked = {(m, a.version): a for m, a in self._unchecked}
            unchecked.update((key, a) for key, a in cache.items() if _unchecked(a))
            self._serving, self._artifacts, self._errors = fresh, artifacts, dict(report.failed)
            self._unchecked = [(key[0], a) for key, a in unchecked.items() if artifacts.get(key) is a]
            self._watched = frozenset(m for m, serving in fresh.items() if serving.state.watch is not None)
            self._seen, self._fingerprint = entries, fingerprint
        for line in report.loaded:
            log.info("serving %s/%s", self.store.root.name, line)
        for model in recovered:
            log.info("%s/%s loads again (it failed before)", self.store.root.name, model)
        return report

    def check_weights(self, deadline: float | None = None) -> int:
        """Compute the weights' checksums that loading left for later (heads/weights_check.py),
        until time.monotonic() reaches `deadline` (None: all of them); a model whose weights do not
        match leaves serving, with the reason in `errors` (retried at every refresh). Returns how
        many are left."""
        with self._lock:
            # Failures a request found first: out of serving now, not when the walk reaches them.
            failed = {m: a.weights_check.error() for m, a in self._unchecked if a.weights_check.failure is not None}
            checked = 0
            for model, artifact in self._unchecked:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                try:
                    artifact.weights_check.ensure()
                except ArtifactError as exc:
                    failed.setdefault(model, exc)
                checked += 1
            if failed:
                self._withdraw(failed)
            self._unchecked = [(m, a) for m, a in self._unchecked[checked:] if m in self._serving]
            return self.unchecked

    def _withdraw(self, failed: dict[str, ArtifactError]) -> None:
        """Take the models whose weights failed their check out of serving (self._lock held)."""
        withdrawn = {model: self._reason(exc) for model, exc in failed.items() if model in self._serving}
        self._serving = {m: serving for m, serving in self._serving.items() if m not in withdrawn}
        self._artifacts = {key: artifact for key, artifact in self._artifacts.items() if key[0] not in withdrawn}
        self._watched = frozenset(m for m in self._watched if m not in withdrawn)
        for model, why in withdrawn.items():  # now that it is out: "it is not served"
            self._note(model, why, failed[model])
        self._errors = {**self._errors, **withdrawn}

    def _reason(self, exc: Exception) -> str:
        """One short line: the message (with the exception's type unless it is one of ours), paths
        relative to MODEL_STORE (they start with the tenant), to show to the tenant and an operator."""
        text = str(exc) if isinstance(exc, HeadsError) else f"{type(exc).__name__}: {exc}"
        text = " ".join(text.replace(f"{layout.store_root(self.store.root)}/", "").split())
        return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."

    def _note(self, model: str, why: str, exc: Exception) -> None:
        """Log a failure once, when it first appears or its reason changes, not at every poll.
        An exception that is not a HeadsError is a gap in the loader's checks: its traceback too."""
        if self._errors.get(model) == why:
            return
        if model == EVERY_MODEL:
            kept = f"the {len(self._serving)} models loaded before keep serving"
        else:
            kept = "it keeps serving its previous state" if model in self._serving else "it is not served"
        log.error(
            "%s/%s does not load, %s; retried at every scan: %s",
            self.store.root.name,
            model,
            kept,
            why,
            exc_info=None if isinstance(exc, HeadsError) else exc,
        )


def _unchecked(artifact: HeadArtifact) -> bool:
    """Whether the artifact's weights still wait for their check, or failed it at a request."""
    check = artifact.weights_check
    return check is not None and not check.verified


def describe(state: ServingState) -> str:
    parts = [f"primary {state.primary}"]
    parts += [f"shadow {s.version} ({s.fraction:g})" for s in state.shadows]
    if state.candidate:
        parts.append(f"candidate {state.candidate.version} ({state.candidate.percent:g}% by {state.candidate.key})")
    if state.fallback:
        parts.append(f"fallback {state.fallback}")
    return ", ".join(parts)
