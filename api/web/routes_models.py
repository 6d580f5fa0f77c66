"""Model routes: listing, detail, monitoring report, serving state, and the operator actions."""

from __future__ import annotations

import functools

from flask import Blueprint, Response, g, request

from api.core.live_heads import LoadedServing
from api.core.rate_limit import report_cost
from api.errors import Conflict, GateRefused, InvalidRequest, NotFound
from api.web.auth import request_tenant, require_operator
from api.web.responses import json_body, json_response, runtime
from api.web.validation import parse_serving_change
from heads import serving_state
from heads.errors import HeadsError, RegistryError
from heads.gated_promotion import promote_if_better
from heads.manifest import embedder_to_dict
from heads.names import check_model_name
from heads.release_gate import DEFAULT_MARGIN, DEFAULT_MIN_ITEMS, GatePolicy
from heads.release_history import release_history
from inferencedb.monitoring_report import build_report, parse_window

routes = Blueprint("models", __name__)


def _model_name(model: str) -> str:
    """A model name from a URL: refused like an unknown model unless it is a safe name."""
    try:
        return check_model_name(model)
    except RegistryError:
        raise NotFound(f"unknown model {model!r}") from None


def _summary(serving: LoadedServing) -> dict:
    head = serving.primary
    return {
        "name": head.model,
        "version": head.version,
        "labels": list(head.labels),
        "decision": {"threshold": head.rule.threshold, "reject_label": head.rule.reject_label},
        "embedder": embedder_to_dict(head.manifest.embedder),
        "metrics": head.metrics,
        "created_at": head.manifest.created_at,
        "serving": serving.state.to_dict(with_history=False),
    }


@routes.get("/v1/models")
def list_models() -> Response:
    rt = runtime()
    tenant = request_tenant()
    loaded = rt.heads.snapshot(tenant)
    errors = {k.split("/", 1)[1]: v for k, v in rt.heads.errors.items() if k.startswith(f"{tenant}/")}
    return json_response({"models": [_summary(loaded[m]) for m in sorted(loaded)], "errors": errors})


@routes.get("/v1/models/<model>")
def get_model(model: str) -> Response:
    rt = runtime()
    tenant = request_tenant()
    serving = rt.heads.get(tenant, _model_name(model))
    return json_response({**_summary(serving), "versions": rt.heads.store(tenant).versions(model)})


@routes.get("/v1/models/<model>/report")
def model_report(model: str) -> Response:
    rt = runtime()
    tenant = request_tenant()
    store = rt.heads.store(tenant)
    if not store.versions(_model_name(model)):
        raise NotFound(f"unknown model {model!r}")
    extra = sorted(set(request.args) - {"since", "until"})
    if extra:
        raise InvalidRequest(f"unknown query parameter(s) {', '.join(extra)}; allowed: since, until")
    since, until = parse_window(request.args.get("since"), request.args.get("until"))
    rt.limiter.acquire(tenant, report_cost(since, until))
    report = build_report(
        rt.database, model, since, until, tenant=tenant, baseline_of=functools.partial(store.baseline, model)
    )
    return json_response({**report, **release_history(store, model)})


@routes.get("/v1/models/<model>/serving")
def get_serving(model: str) -> Response:
    rt = runtime()
    state = rt.heads.store(request_tenant()).serving(_model_name(model))
    if state is None:
        raise NotFound(f"unknown model {model!r}")
    return json_response({"model": model, **state.to_dict()})


@routes.post("/v1/models/<model>/serving")
def change_serving(model: str) -> Response:
    """Operator only: promote, shadow, unshadow, ab, ab_off, fallback, fallback_off, guard, guard_off, rollback.
    A well-formed change that the model's versions or serving state do not allow is a 409."""
    rt = runtime()
    require_operator()
    tenant = request_tenant()
    parsed = parse_serving_change(json_body())
    store = rt.heads.store(tenant)
    if not store.versions(_model_name(model)):
        raise NotFound(f"unknown model {model!r}")
    if parsed.gate is not None:
        return _gated_promote(rt, store, model, parsed)
    try:
        change, reason, is_rollback = serving_state.operation(parsed.action, **parsed.options)
        why = f"{parsed.reason or reason} (HTTP, operator key {g.principal.key_id})"  # the audit trail
        state = store.change_serving(model, change, reason=why, rollback=is_rollback)
    except HeadsError as exc:
        raise Conflict(str(exc)) from None
    rt.heads.refresh()  # this worker serves the new state at once; the others within the reload interval
    return json_response({"model": model, **state.to_dict(with_history=False)})


def _gated_promote(rt, store, model: str, parsed) -> Response:
    """Promote only on evidence (heads/gated_promotion.py): 200 with the new state and the decision,
    409 gate_refused with the decision when the evidence does not support the version."""
    gate = parsed.gate
    policy = GatePolicy(
        margin=DEFAULT_MARGIN if gate["margin"] is None else gate["margin"],
        min_items=DEFAULT_MIN_ITEMS if gate["min_items"] is None else gate["min_items"],
    )
    note = f"({parsed.reason + ', ' if parsed.reason else ''}HTTP, operator key {g.principal.key_id})"
    try:
        outcome = promote_if_better(store, model, parsed.options["version"], policy, database=rt.database, note=note)
    except HeadsError as exc:
        raise Conflict(str(exc)) from None
    if not outcome.promoted:
        raise GateRefused(f"refused by the release gate: {outcome.decision['reason']}", decision=outcome.decision)
    rt.heads.refresh()
    return json_response({"model": model, **outcome.state.to_dict(with_history=False), "decision": outcome.decision})


@routes.post("/v1/admin/reload")
def reload_heads() -> Response:
    """Operator only: read every serving state again, in every worker of this router. This worker
    reloads before answering (its reports are the body); it bumps the router's reload generation,
    which the other workers apply at their next poll, within API_RELOAD_INTERVAL_S."""
    require_operator()
    rt = runtime()
    generation, reports = rt.heads.reload_everywhere()
    return json_response(
        {
            "tenants": len(reports),
            "loaded": [f"{t}/{line}" for t, r in reports.items() for line in r.loaded],
            "failed": {f"{t}/{m}": why for t, r in reports.items() for m, why in r.failed.items()},
            "generation": generation,
            "others_within_s": rt.settings.reload_interval_s,
        }
    )
