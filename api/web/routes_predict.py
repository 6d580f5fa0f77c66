"""Prediction routes: POST /v1/models/<model>/predict and the feedback on a prediction."""

from __future__ import annotations

import time

from flask import Blueprint, Response, g, request

from api.core import metrics
from api.core.predictor import PredictResult
from api.core.rate_limit import FEEDBACK_COST, PREDICT_COST
from api.errors import ApiError, NotFound, UnknownLabel
from api.web.auth import request_tenant
from api.web.responses import json_body, json_response, runtime
from api.web.validation import check_request_id, parse_feedback, parse_predict, request_timeout_s

routes = Blueprint("predict", __name__)


def arrival() -> float:
    """The time.monotonic() instant this request reached the app (its deadline counts from it)."""
    return time.monotonic() - (time.perf_counter() - g.started)


def _render(result: PredictResult) -> Response:
    body = {
        "model": result.model,
        "version": result.version,
        "request_id": result.request_id,
        "variant": result.role,
        "fallback": result.role == "fallback",
        "predictions": [
            {
                "label": p.label,
                "probability": p.probability,
                "rejected": p.rejected,
                "top_k": [{"label": label, "probability": prob} for label, prob in p.top_k],
                "cache_hit": p.cache_hit,
            }
            for p in result.predictions
        ],
        "timings_ms": {
            "embedding": round(result.embed_ms, 3),
            "head": round(result.head_ms, 3),
            "total": round(result.total_ms, 3),
        },
    }
    headers = {
        "X-Model-Version": result.version,
        "X-Embedding-Time-Ms": f"{result.embed_ms:.3f}",
        "X-Head-Time-Ms": f"{result.head_ms:.3f}",
        "X-Total-Time-Ms": f"{result.total_ms:.3f}",
        "X-Deadline-Ms": f"{result.deadline_ms:.0f}",
        "Server-Timing": f"embed;dur={result.embed_ms:.3f}, head;dur={result.head_ms:.3f}, total;dur={result.total_ms:.3f}",
    }
    return json_response(body, 200, headers)


@routes.post("/v1/models/<model>/predict")
def predict(model: str) -> Response:
    rt = runtime()
    tenant = request_tenant()
    known = model in rt.heads.snapshot(tenant)
    label = f"{tenant}/{model}" if known else metrics.UNKNOWN_MODEL
    try:
        rt.limiter.acquire(tenant, PREDICT_COST)
        parsed = parse_predict(json_body(), rt.limits)
        result = rt.predictor.predict(
            model,
            parsed,
            request_id=g.request_id,
            client_id=request.headers.get("X-Client-ID"),
            tenant=tenant,
            timeout_s=request_timeout_s(request.headers.get("X-Request-Timeout-Ms")),
            received=arrival(),
        )
    except ApiError as error:
        metrics.REQUESTS.labels(label, str(error.status)).inc()
        raise
    metrics.record_answer(
        label,
        tenant,
        seconds=time.perf_counter() - g.started,
        embed_seconds=result.embed_ms / 1000,
        head_seconds=result.head_ms / 1000,
        version=result.version,
        role=result.role,
        texts=len(result.predictions),
    )
    response = _render(result)
    for job in result.after_sent:
        response.call_on_close(job)  # after the answer is sent
    return response


@routes.post("/v1/predictions/<request_id>/feedback")
def feedback(request_id: str) -> Response:
    rt = runtime()
    check_request_id(request_id)
    tenant = request_tenant()
    rt.limiter.acquire(tenant, FEEDBACK_COST)
    parsed = parse_feedback(json_body())
    found = rt.feedback.find(tenant, request_id, parsed.item_index)
    if found is None:
        raise NotFound(f"no prediction with request id {request_id!r} and item_index {parsed.item_index}")
    model, version = found
    heads = rt.heads.tenant(tenant)
    allowed = heads.answer_labels(model, version) if heads else set()
    if parsed.label not in allowed:
        shown = ", ".join(sorted(allowed)[:20]) + (" ..." if len(allowed) > 20 else "")
        raise UnknownLabel(f"label {parsed.label!r} is not a label of {model} version {version} (labels: {shown})")
    rt.feedback.record(tenant, request_id, parsed.item_index, model, parsed.label, request.headers.get("X-Client-ID"))
    body = {
        "request_id": request_id,
        "item_index": parsed.item_index,
        "model": model,
        "version": version,
        "label": parsed.label,
    }
    return json_response(body, 201)
