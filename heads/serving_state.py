"""Which versions of a model serve, and how: the declarative serving state.

    <store>/<model>/serving.json
    {
      "primary":   "20261122T101500123Z-3f9a",             answers every request by default
      "shadows":   [{"version": "...", "fraction": 1.0}],   score a share of requests, never answer
      "candidate": {"version": "...", "percent": 10,        answers `percent`% of traffic, sticky
                    "key": "client_id"},                    per client (or per request: "request_id")
      "fallback":  "...",                                   answers when the primary cannot
      "guard":     {"window_s": 600, "min_agreement": 0.7, ...}, opt-in automatic rollback, and
      "watch":     {"version": ..., "previous": ..., "since": ...}  the promotion it watches
                                                            (heads/rollback_guard.py); both optional
      "updated_at": "...", "reason": "...",
      "history":   [previous states, newest last]           what `rollback` returns to
    }

Every change goes through `change_serving()`: read, apply, validate against the store, write
atomically (temporary file + rename), under a lock so two operators cannot interleave.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from embedder.features import same_model
from heads import layout
from heads.errors import RegistryError
from heads.rollback_guard import Guard, Watch, check_guard, describe_guard

HISTORY_LIMIT = 50
CANDIDATE_KEYS = ("client_id", "request_id")


@dataclass(frozen=True)
class Shadow:
    version: str
    fraction: float = 1.0  # share of requests it scores


@dataclass(frozen=True)
class Candidate:
    version: str
    percent: float  # share of traffic it answers, 0-100
    key: str = "client_id"  # what keeps a caller on one variant


@dataclass(frozen=True)
class ServingState:
    primary: str
    shadows: tuple[Shadow, ...] = ()
    candidate: Candidate | None = None
    fallback: str | None = None
    guard: Guard | None = None
    watch: Watch | None = None
    updated_at: str = ""
    reason: str = ""
    history: tuple[dict, ...] = field(default=(), compare=False)

    def versions(self) -> list[str]:
        """Every version this state needs loaded, primary first."""
        out = [self.primary, *(s.version for s in self.shadows)]
        out += [self.candidate.version] if self.candidate else []
        out += [self.fallback] if self.fallback else []
        return list(dict.fromkeys(out))

    def to_dict(self, *, with_history: bool = True) -> dict:
        data = {
            "primary": self.primary,
            "shadows": [dataclasses.asdict(s) for s in self.shadows],
            "candidate": dataclasses.asdict(self.candidate) if self.candidate else None,
            "fallback": self.fallback,
            "updated_at": self.updated_at,
            "reason": self.reason,
        }
        # Written only when set, so that states without them read and write as before.
        if self.guard is not None:
            data["guard"] = self.guard.to_dict()
        if self.watch is not None:
            data["watch"] = self.watch.to_dict()
        if with_history:
            data["history"] = list(self.history)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ServingState:
        candidate = data.get("candidate")
        return cls(
            primary=data["primary"],
            shadows=tuple(Shadow(s["version"], float(s.get("fraction", 1.0))) for s in data.get("shadows", ())),
            candidate=Candidate(candidate["version"], float(candidate["percent"]), candidate.get("key", "client_id"))
            if candidate
            else None,
            fallback=data.get("fallback"),
            guard=Guard.from_dict(data["guard"]) if data.get("guard") else None,
            watch=Watch.from_dict(data["watch"]) if data.get("watch") else None,
            updated_at=data.get("updated_at", ""),
            reason=data.get("reason", ""),
            history=tuple(data.get("history", ())),
        )


def read_state(path: Path) -> ServingState | None:
    """The state in `path`, None when there is none; RegistryError when it cannot be read or is
    malformed (not JSON, not an object, a missing or mistyped field)."""
    try:
        if not path.is_file():
            return None
        return ServingState.from_dict(json.loads(path.read_text()))
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read the serving state ({exc.strerror or exc})") from None
    except (LookupError, TypeError, ValueError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise RegistryError(f"{path}: unreadable serving state ({exc!r})") from None


@contextmanager
def locked(model_dir: Path) -> Iterator[None]:
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.serving_lock_path(model_dir), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_state(state: ServingState, embedder_of: Callable[[str], str | None]) -> None:
    """Refuse a state that cannot serve. `embedder_of(version)` loads the version (raising on a
    missing, partial or corrupt one) and returns its embedder id, or None if it needs no embedder."""
    for shadow in state.shadows:
        if not 0 < shadow.fraction <= 1:
            raise RegistryError(f"shadow {shadow.version}: fraction must be in (0, 1], got {shadow.fraction}")
    if state.candidate is not None:
        if not 0 <= state.candidate.percent <= 100:
            raise RegistryError(
                f"candidate {state.candidate.version}: percent must be in [0, 100], got {state.candidate.percent}"
            )
        if state.candidate.key not in CANDIDATE_KEYS:
            raise RegistryError(
                f"candidate key must be one of {', '.join(CANDIDATE_KEYS)}, got {state.candidate.key!r}"
            )
        if state.candidate.version == state.primary:
            raise RegistryError("the candidate must differ from the primary")
    if state.primary in {s.version for s in state.shadows}:
        raise RegistryError(f"{state.primary} is the primary: it cannot also be a shadow")
    if state.guard is not None:
        check_guard(state.guard)
    # Versions trained on different features of one model (embedder/features.py) are served by
    # the same embedding service; different models are not.
    primary_embedder = embedder_of(state.primary)
    answering = [("shadow", s.version) for s in state.shadows]
    answering += [("candidate", state.candidate.version)] if state.candidate else []
    for role, version in answering:
        embedder = embedder_of(version)
        if embedder is not None and primary_embedder is not None and not same_model(embedder, primary_embedder):
            raise RegistryError(
                f"{role} {version} was trained with embedder {embedder}, the primary {state.primary} with "
                f"{primary_embedder}: one embedding service cannot serve both"
            )
    if state.fallback is not None:
        embedder = embedder_of(state.fallback)
        if embedder is not None and primary_embedder is not None and not same_model(embedder, primary_embedder):
            raise RegistryError(f"fallback {state.fallback} needs embedder {embedder}, the primary {primary_embedder}")


def stamp(state: ServingState, previous: ServingState | None, reason: str) -> ServingState:
    """The new state with time, reason and the previous state appended to the history."""
    history = list(previous.history) if previous else []
    if previous is not None:
        history.append(previous.to_dict(with_history=False))
    return dataclasses.replace(
        state,
        updated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        reason=reason,
        history=tuple(history[-HISTORY_LIMIT:]),
    )


# --- the operations the CLI offers; each returns the new state from the current one ---------------
# Every change but a promotion under a guard ends the watch of the last promotion (`watch=None`):
# after an operator's change, nothing automatic may undo it.


def promote(current: ServingState | None, version: str, *, now: dt.datetime | None = None) -> ServingState:
    """`version` answers all traffic. Under a guard, the primary it replaces stays on as a shadow
    and a watch opens on the promotion (heads/rollback_guard.py)."""
    if current is None:
        return ServingState(primary=version)
    shadows = tuple(s for s in current.shadows if s.version != version)
    candidate = None if current.candidate and current.candidate.version == version else current.candidate
    fallback = None if current.fallback == version else current.fallback
    watch = None
    if current.guard is not None and current.primary != version:
        shadows = (
            *(s for s in shadows if s.version != current.primary),
            Shadow(current.primary, current.guard.shadow_fraction),
        )
        since = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="microseconds")
        watch = Watch(version=version, previous=current.primary, since=since)
    return dataclasses.replace(
        current, primary=version, shadows=shadows, candidate=candidate, fallback=fallback, watch=watch
    )


def set_shadow(current: ServingState | None, version: str, fraction: float | None) -> ServingState:
    """Add or update a shadow; fraction None removes it."""
    if current is None:
        raise RegistryError("the model has no primary yet: promote a version first")
    shadows = [s for s in current.shadows if s.version != version]
    if fraction is not None:
        shadows.append(Shadow(version, fraction))
    elif len(shadows) == len(current.shadows):
        raise RegistryError(f"{version} is not a shadow")
    return dataclasses.replace(current, shadows=tuple(shadows), watch=None)


def set_candidate(
    current: ServingState | None, version: str | None, percent: float = 0, key: str = "client_id"
) -> ServingState:
    """Start (or change) an A/B test; version None ends it."""
    if current is None:
        raise RegistryError("the model has no primary yet: promote a version first")
    return dataclasses.replace(current, candidate=Candidate(version, percent, key) if version else None, watch=None)


def set_fallback(current: ServingState | None, version: str | None) -> ServingState:
    if current is None:
        raise RegistryError("the model has no primary yet: promote a version first")
    return dataclasses.replace(current, fallback=version, watch=None)


def set_guard(current: ServingState | None, guard: Guard | None) -> ServingState:
    """Set (or replace) the automatic-rollback guard; None removes it. Either ends a running watch."""
    if current is None:
        raise RegistryError("the model has no primary yet: promote a version first")
    if guard is None and current.guard is None:
        raise RegistryError("the model has no guard")
    return dataclasses.replace(current, guard=guard, watch=None)


def rollback(current: ServingState | None) -> ServingState:
    """The state before the last change (the history keeps going back)."""
    if current is None or not current.history:
        raise RegistryError("nothing to roll back to: the model has no earlier serving state")
    previous = ServingState.from_dict(current.history[-1])
    return dataclasses.replace(previous, history=current.history[:-1])


class StateMoved(RegistryError):
    """The watched promotion is no longer the current state: someone changed it since."""


def undo_promotion(current: ServingState | None, watch: Watch) -> ServingState:
    """The automatic rollback: the state from before the watched promotion, only while that
    promotion is still the current state (same watch, same primary); StateMoved otherwise."""
    if current is None or current.watch != watch or current.primary != watch.version:
        raise StateMoved(f"the promotion of {watch.version} at {watch.since} is no longer the serving state")
    return rollback(current)


ACTIONS = (
    "promote",
    "shadow",
    "unshadow",
    "ab",
    "ab_off",
    "fallback",
    "fallback_off",
    "guard",
    "guard_off",
    "rollback",
)


def operation(
    action: str,
    *,
    version: str | None = None,
    fraction: float = 1.0,
    percent: float | None = None,
    key: str = "client_id",
    guard: Guard | None = None,
) -> tuple[Callable[[ServingState | None], ServingState], str, bool]:
    """(change, default reason, is_rollback) for one named action: the one table behind the CLI
    and the router's operator endpoint."""
    needs_version = {"promote", "shadow", "unshadow", "ab", "fallback"}
    if action not in ACTIONS:
        raise RegistryError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if action in needs_version and not version:
        raise RegistryError(f"{action} needs a version")
    if action == "promote":
        return (lambda s: promote(s, version)), f"promote {version}", False
    if action == "shadow":
        return (lambda s: set_shadow(s, version, fraction)), f"shadow {version} on {fraction:g} of requests", False
    if action == "unshadow":
        return (lambda s: set_shadow(s, version, None)), f"remove shadow {version}", False
    if action == "ab":
        if percent is None:
            raise RegistryError("ab needs a percent")
        return (lambda s: set_candidate(s, version, percent, key)), f"A/B: {version} on {percent:g}% by {key}", False
    if action == "ab_off":
        return (lambda s: set_candidate(s, None)), "end A/B test", False
    if action == "fallback":
        return (lambda s: set_fallback(s, version)), f"fallback {version}", False
    if action == "fallback_off":
        return (lambda s: set_fallback(s, None)), "fallback off", False
    if action == "guard":
        if guard is None:
            raise RegistryError("guard needs a policy (window and at least one bound)")
        check_guard(guard)
        return (lambda s: set_guard(s, guard)), f"guard {describe_guard(guard)}", False
    if action == "guard_off":
        return (lambda s: set_guard(s, None)), "guard off", False
    return rollback, "rollback", True
