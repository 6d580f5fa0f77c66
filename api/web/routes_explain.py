"""POST /v1/models/<model>/explain: each word's contribution to the label the model's primary gives
one text (api/core/explainer.py), counted against the tenant's rate limit by its words."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from api.core import metrics
from api.core.explainer import Explainer, Explanation
from api.core.rate_limit import explain_cost
from api.errors import ApiError
from api.web.auth import request_tenant
from api.web.responses import json_body, json_response, runtime
from api.web.routes_predict import arrival
from api.web.validation import parse_explain, request_timeout_s

routes = Blueprint("explain", __name__)


def _render(result: Explanation) -> Response:
    body = {
        "model": result.model,
        "version": result.version,
        "request_id": result.request_id,
        "label": result.label,
        "probability": result.probability,
        "rejected": result.rejected,
        "words": [{"word": w.word, "contribution": w.contribution} for w in result.words],
        "variants": result.variants,
        "timings_ms": {
            "embedding": round(result.embed_ms, 3),
            "head": round(result.head_ms, 3),
            "total": round(result.total_ms, 3),
        },
    }
    return json_response(body, 200, {"X-Model-Version": result.version})


@routes.post("/v1/models/<model>/explain")
def explain(model: str) -> Response:
    rt = runtime()
    tenant = request_tenant()
    label = f"{tenant}/{model}" if model in rt.heads.snapshot(tenant) else metrics.UNKNOWN_MODEL
    explainer = Explainer(
        rt.predictor, max_words=rt.settings.explain_max_words, decimals=rt.settings.probability_decimals
    )
    try:
        text = parse_explain(json_body(), rt.limits)
        words = explainer.check(text)
        rt.limiter.acquire(tenant, explain_cost(len(words), rt.settings.max_texts))
        result = explainer.explain(
            model,
            text,
            tenant=tenant,
            request_id=g.request_id,
            timeout_s=request_timeout_s(request.headers.get("X-Request-Timeout-Ms")),
            received=arrival(),
        )
    except ApiError as error:
        metrics.EXPLANATIONS.labels(label, str(error.status)).inc()
        raise
    metrics.EXPLANATIONS.labels(label, "200").inc()
    return _render(result)
