"""Operational routes: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import time
from collections import Counter

from flask import Blueprint, Response, current_app, request

from api.core import metrics
from api.errors import ApiError, NotReady
from api.web.auth import principal_of, require_operator
from api.web.openapi import openapi_document
from api.web.responses import json_response, runtime
from embedder.errors import EmbedderError
from embedder.features import served_by

routes = Blueprint("ops", __name__)
READY_CACHE_S = 1.0  # readiness probes come often: ask the embedder at most once a second


@routes.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
def readyz() -> Response:
    """Ready (200) while this router can answer: the embedder answers and at least one head can
    serve. While the embedder is unreachable, 200 `degraded` if some model still answers without
    it (its fallback, or all its heads, need no embeddings: n-gram heads): the load balancer keeps
    the router, which answers what it can, rather than replacing every replica in an outage that
    new ones would meet too. 503 when nothing can be answered.

    Models that do not load are counted (`load_errors`) but never make the router unready: a bad
    model is in the shared store, the same on every replica, so failing the probe would only take
    the healthy tenants' traffic away from every replica. Counts only: which tenants and models
    exist is not shown to an unauthenticated caller; with an operator key, `failed_models` lists
    them with the reason."""
    rt = runtime()
    ready_cache = current_app.extensions.setdefault("ready_cache", {"at": 0.0, "info": None, "error": None})
    now = time.monotonic()
    if now - ready_cache["at"] > READY_CACHE_S:
        try:
            ready_cache["info"], ready_cache["error"] = rt.embedder.info(timeout=1.0), None
        except EmbedderError as exc:
            ready_cache["info"], ready_cache["error"] = None, exc.message
        ready_cache["at"] = now
    info, sets, failures = ready_cache["info"], rt.heads.all_sets(), rt.heads.failures()
    # A model is not servable when a version of its serving set needs vectors (a model, a feature
    # set) that the running embedder does not produce.
    mismatched = [
        k
        for k, s in sets.items()
        if info is not None
        and any(h.embedder_id and not served_by(h.embedder_id, info.model_id, info.layers) for h in s.heads())
    ]
    body = {
        "embedder": {
            "model_id": info.model_id if info else None,
            "layers": info.layers if info else None,
            "reachable": info is not None,
        },
        "models": len(sets),
        "servable_models": len(sets) - len(mismatched),
        "embedder_mismatch": len(mismatched),
        "load_errors": len(failures),
        "unchecked_weights": rt.heads.unchecked,
    }
    if info is None:  # what each model can still answer without embeddings
        answers = Counter(serving.without_embedder() for serving in sets.values())
        body["servable_models"] = answers["all"] + answers["fallback"]
        body["fallback_models"], body["unanswerable_models"] = answers["fallback"], answers["none"]
    if _is_operator(rt):
        body["failed_models"] = [f.to_dict() for f in failures]
    if not body["servable_models"]:
        why = "the embedding service is unreachable" if info is None else "no model can be served"
        error = NotReady(why)
        return json_response(
            {"status": "not ready", "reason": why, **body}, error.status, {"Retry-After": str(error.retry_after_s)}
        )
    if info is None:
        why = (
            f"the embedding service is unreachable; models answering from their fallback: {answers['fallback']}, "
            f"needing no embedder: {answers['all']}, unable to answer: {answers['none']}"
        )
        return json_response({"status": "degraded", "reason": why, **body})
    return json_response({"status": "ready", **body})


def _is_operator(rt) -> bool:
    """/readyz is public (no key needed, and no 401 for a bad one); an operator key adds details."""
    header = request.headers.get("Authorization")
    if not rt.settings.auth or not header:
        return False
    try:
        return principal_of(rt, header).is_operator
    except ApiError:
        return False


@routes.get("/metrics")
def prometheus() -> Response:
    require_operator()  # metric labels name every tenant's models
    payload, content_type = metrics.render()
    return Response(payload, mimetype=content_type.split(";")[0], content_type=content_type)


@routes.get("/openapi.json")
def openapi() -> Response:
    return json_response(openapi_document(runtime().settings))
