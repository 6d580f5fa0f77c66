"""Gated promotion: make a version the primary only when the evidence says it is better than the
current primary, or not worse within a margin (heads/release_gate.py), and record the decision.

    python -m heads promote MODEL VERSION --if-better      (heads/__main__.py)
    POST /v1/models/<model>/serving {"action": "promote", "version": ..., "if_better": true}

Evidence, per source of paired outcomes:
- "held_out": both versions' answers on the held-out split at training time (heads/paired_evidence.py);
- "shadow_feedback": items the primary answered and the candidate scored as a shadow, with feedback
  (inferencedb/release_evidence.py), when a database is given.

Either way the decision goes to `<model>/decisions.jsonl` (heads/decisions.py, kind "gate") with
its numbers; a promotion's serving-state reason names the gate and the numbers, so the serving
history says why too. Pure Python: the router imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from heads import serving_state
from heads.decisions import record_decision
from heads.errors import RegistryError
from heads.paired_evidence import heldout_pairs
from heads.release_gate import GatePolicy, PairedCounts, decide
from heads.serving_state import ServingState

HELD_OUT = "held_out"
SHADOW_FEEDBACK = "shadow_feedback"


@dataclass(frozen=True)
class GateOutcome:
    decision: dict  # the entry written to decisions.jsonl
    state: ServingState | None  # the new serving state when promoted, else None

    @property
    def promoted(self) -> bool:
        return self.state is not None


def gather_evidence(store, model: str, primary: str, candidate: str, *, database=None) -> tuple[dict, dict]:
    """({source: PairedCounts, or why it is unavailable}, {source: what else it found})."""
    sources: dict = {}
    info: dict = {}
    pairs, info[HELD_OUT] = heldout_pairs(store.version_dir(model, primary), store.version_dir(model, candidate))
    sources[HELD_OUT] = pairs
    if database is None:
        sources[SHADOW_FEEDBACK] = "no inference database given (DATABASE_URL)"
    else:
        from inferencedb.release_evidence import shadow_evidence

        cells, info[SHADOW_FEEDBACK] = shadow_evidence(
            database, tenant=store.tenant or "default", model=model, primary=primary, candidate=candidate
        )
        sources[SHADOW_FEEDBACK] = cells if isinstance(cells, str) else PairedCounts(*cells)
    return sources, info


def promote_if_better(
    store, model: str, version: str, policy: GatePolicy, *, database=None, note: str = ""
) -> GateOutcome:
    """Compare `version` with the model's primary and promote it if the gate allows. `note` is
    appended to the serving-state reason (who asked). RegistryError when there is nothing to
    compare: an unknown version, no primary yet, or the version already is the primary."""
    if version not in store.versions(model):
        raise RegistryError(f"model {model!r} has no version {version!r}")
    serving = store.serving(model)
    if serving is None:
        raise RegistryError(f"model {model!r} has no primary to compare with: promote a first version without the gate")
    primary = serving.primary
    if version == primary:
        raise RegistryError(f"{version} already is the primary of {model!r}")
    sources, info = gather_evidence(store, model, primary, version, database=database)
    decision = decide(sources, policy)
    evidence = {
        "primary": primary,
        "candidate": version,
        "policy": policy.to_dict(),
        "sources": decision.sources,
        "information": info,
    }
    state = None
    if decision.promoted:

        def change(current: ServingState | None) -> ServingState:
            if current is None or current.primary != primary:
                now = current.primary if current else None
                raise RegistryError(
                    f"the primary changed from {primary} to {now} while the gate compared: run it again"
                )
            return serving_state.promote(current, version)

        reason = f"gate: promote {version} over {primary}: {decision.reason}" + (f" {note}" if note else "")
        state = store.change_serving(model, change, reason=reason)
    entry = record_decision(
        store.model_dir(model),
        kind="gate",
        version=version,
        outcome="promoted" if decision.promoted else "refused",
        reason=decision.reason,
        evidence=evidence,
    )
    return GateOutcome(entry, state)
