"""What a model's report shows of its releases: the decisions (heads/decisions.py: gate decisions,
automatic rollbacks, with their evidence) and the serving history (heads/serving_state.py).

Read from the model store, not the inference database: the router's GET /v1/models/<model>/report
and `python -m heads report` add it to the monitoring report. Pure Python: the router imports it.
"""

from __future__ import annotations

from heads.decisions import read_decisions

MAX_DECISIONS = 200  # the newest; decisions.jsonl itself keeps every one


def release_history(store, model: str, *, limit: int = MAX_DECISIONS) -> dict:
    """{"decisions": the newest `limit` decisions, oldest first; "serving_history": the serving
    states, oldest first, the current one last (each with its updated_at and reason); [] when the
    model never served}."""
    state = store.serving(model)
    states = [*state.history, state.to_dict(with_history=False)] if state is not None else []
    return {"decisions": read_decisions(store.model_dir(model), limit=limit), "serving_history": states}


def evidence_summary(decision: dict) -> str:
    """One line of a decision's numbers, for a table: per source of a gate decision its pairs,
    difference, interval and p, or why it was unavailable; other evidence as key=value pairs."""
    evidence = decision.get("evidence") or {}
    sources = evidence.get("sources")
    if isinstance(sources, dict):
        parts = []
        for name, s in sources.items():
            if not s.get("available"):
                parts.append(f"{name}: unavailable ({s.get('why', '')})")
            else:
                parts.append(
                    f"{name}: n={s['n']}, difference {100 * s['difference']:+.1f} points "
                    f"(CI {100 * s['ci_low']:+.1f}..{100 * s['ci_high']:+.1f}), p={s['p_value']:g}"
                )
        return "; ".join(parts)
    return ", ".join(f"{k}={v}" for k, v in sorted(evidence.items()) if not isinstance(v, (dict, list)))
