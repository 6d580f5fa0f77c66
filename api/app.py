"""The HTTP adapter: Flask routes over the Predictor, one error mapping, request ids, timings.

gunicorn -c api/gunicorn_conf.py "api.app:create_app()"
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api import metrics
from api.errors import ApiError, BadRequest, InvalidRequest, MethodNotAllowed, NotFound, NotReady, PayloadTooLarge
from api.feedback import parse_feedback
from api.openapi import openapi_document
from api.predictor import PredictResult
from api.report import build_report, parse_window
from api.runtime import Runtime, build_runtime
from api.settings import RouterSettings, router_settings
from api.validation import Limits, check_request_id, parse_predict
from embedder.errors import EmbedderError
from heads.errors import RegistryError
from heads.registry import check_model_name

log = logging.getLogger(__name__)
JSON = "application/json"
READY_CACHE_S = 1.0


def _json(payload: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype=JSON, headers=headers)


def _error_response(error: ApiError) -> Response:
    metrics.ERRORS.labels(error.code).inc()
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
    body = {"error": {"code": error.code, "message": error.message, "request_id": getattr(g, "request_id", None)}}
    return _json(body, error.status, headers)


def _render_prediction(result: PredictResult) -> Response:
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
        "Server-Timing": f"embed;dur={result.embed_ms:.3f}, head;dur={result.head_ms:.3f}, total;dur={result.total_ms:.3f}",
    }
    return _json(body, 200, headers)


def _model_summary(serving) -> dict:
    head = serving.primary
    manifest = head.manifest
    return {
        "name": head.model,
        "version": head.version,
        "labels": list(head.labels),
        "decision": {"threshold": head.rule.threshold, "reject_label": head.rule.reject_label},
        "embedder": manifest["embedder"],
        "metrics": manifest.get("metrics", {}),
        "created_at": manifest.get("created_at"),
        "serving": serving.state.to_dict(with_history=False),
    }


def check_model_name_safely(model: str) -> str:
    """A model name from a URL: refused (404, like an unknown model) unless it is a safe name."""
    try:
        return check_model_name(model)
    except RegistryError:
        raise NotFound(f"unknown model {model!r}") from None


def _timeout_s(header: str | None) -> float | None:
    """X-Request-Timeout-Ms: the caller's deadline for this request (1-60000 ms)."""
    if header is None:
        return None
    if not header.isdigit() or not 1 <= int(header) <= 60_000:
        raise InvalidRequest("header X-Request-Timeout-Ms must be an integer between 1 and 60000")
    return int(header) / 1000


def create_app(settings: RouterSettings | None = None, *, runtime: Runtime | None = None) -> Flask:
    """The router app. Builds its runtime (heads, embedder client, inference log) unless given."""
    settings = settings or (runtime.settings if runtime else router_settings())
    runtime = runtime or build_runtime(settings)
    limits = Limits(settings.max_texts, settings.max_text_chars, settings.max_top_k, settings.default_top_k)
    app = Flask("api")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["manyheads"] = runtime
    ready_cache: dict = {"at": 0.0, "info": None, "error": None}

    @app.before_request
    def assign_request_id() -> None:
        g.started = time.perf_counter()
        g.request_id = uuid.uuid4().hex
        g.request_id = check_request_id(request.headers.get("X-Request-ID")) or g.request_id

    @app.after_request
    def add_request_id(response: Response) -> Response:
        if getattr(g, "request_id", None):
            response.headers["X-Request-ID"] = g.request_id
        return response

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return _error_response(error)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error) -> Response:
        return _error_response(
            PayloadTooLarge(f"the request body is larger than the limit of {settings.max_body_bytes} bytes")
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if error.code == 404:
            return _error_response(NotFound(f"no route for {request.method} {request.path}"))
        if error.code == 405:
            return _error_response(MethodNotAllowed(f"{request.method} is not allowed on {request.path}"))
        return _error_response(BadRequest(error.description or error.name))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception(
            "unexpected error on %s %s (request %s)", request.method, request.path, getattr(g, "request_id", "-")
        )
        return _error_response(ApiError("internal error; the request id identifies it in the server log"))

    @app.post("/v1/models/<model>/predict")
    def predict(model: str) -> Response:
        head_known = model in runtime.heads.snapshot()
        label = model if head_known else metrics.UNKNOWN_MODEL
        try:
            if request.mimetype != JSON:
                raise BadRequest(f"Content-Type must be {JSON}, got {request.mimetype or 'nothing'}")
            try:
                body = json.loads(request.get_data(cache=False))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(f"malformed JSON: {exc}") from None
            parsed = parse_predict(body, limits)
            result = runtime.predictor.predict(
                model,
                parsed,
                request_id=g.request_id,
                client_id=request.headers.get("X-Client-ID"),
                timeout_s=_timeout_s(request.headers.get("X-Request-Timeout-Ms")),
            )
        except ApiError as error:
            metrics.REQUESTS.labels(label, str(error.status)).inc()
            raise
        metrics.REQUESTS.labels(label, "200").inc()
        metrics.REQUEST_SECONDS.labels(label).observe(time.perf_counter() - g.started)
        metrics.EMBED_SECONDS.labels(label).observe(result.embed_ms / 1000)
        metrics.HEAD_SECONDS.labels(label).observe(result.head_ms / 1000)
        metrics.TEXTS.labels(label, result.version, result.role).inc(len(result.predictions))
        response = _render_prediction(result)
        if result.shadow_job is not None:
            response.call_on_close(result.shadow_job)  # after the answer is sent
        return response

    @app.post("/v1/predictions/<request_id>/feedback")
    def feedback(request_id: str) -> Response:
        check_request_id(request_id)
        if request.mimetype != JSON:
            raise BadRequest(f"Content-Type must be {JSON}, got {request.mimetype or 'nothing'}")
        try:
            body = json.loads(request.get_data(cache=False))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        parsed = parse_feedback(body)
        tenant = "default"
        model, version = runtime.feedback.find(tenant, request_id, parsed.item_index)
        allowed = runtime.heads.answer_labels(model, version)
        if parsed.label not in allowed:
            shown = ", ".join(sorted(allowed)[:20]) + (" ..." if len(allowed) > 20 else "")
            raise InvalidRequest(
                f"label {parsed.label!r} is not a label of {model} version {version} (labels: {shown})"
            )
        runtime.feedback.record(
            tenant, request_id, parsed.item_index, model, parsed.label, request.headers.get("X-Client-ID")
        )
        body = {
            "request_id": request_id,
            "item_index": parsed.item_index,
            "model": model,
            "version": version,
            "label": parsed.label,
        }
        return _json(body, 201)

    @app.get("/v1/models")
    def list_models() -> Response:
        heads = runtime.heads.snapshot()
        return _json({"models": [_model_summary(heads[m]) for m in sorted(heads)], "errors": runtime.heads.errors})

    @app.get("/v1/models/<model>")
    def get_model(model: str) -> Response:
        head = runtime.heads.get(model)
        return _json({**_model_summary(head), "versions": runtime.heads.store.versions(model)})

    @app.get("/v1/models/<model>/report")
    def model_report(model: str) -> Response:
        if not runtime.heads.store.versions(check_model_name_safely(model)):
            raise NotFound(f"unknown model {model!r}")
        extra = sorted(set(request.args) - {"since", "until"})
        if extra:
            raise InvalidRequest(f"unknown query parameter(s) {', '.join(extra)}; allowed: since, until")
        since, until = parse_window(request.args.get("since"), request.args.get("until"))
        return _json(build_report(runtime.database, runtime.heads.store, model, since, until))

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        now = time.monotonic()
        if now - ready_cache["at"] > READY_CACHE_S:
            try:
                ready_cache["info"], ready_cache["error"] = runtime.embedder.info(timeout=1.0), None
            except EmbedderError as exc:
                ready_cache["info"], ready_cache["error"] = None, exc.message
            ready_cache["at"] = now
        info, heads = ready_cache["info"], runtime.heads.snapshot()
        mismatched = sorted(
            m
            for m, serving in heads.items()
            if info is not None and serving.primary.embedder_id not in (None, info.model_id)
        )
        servable = [m for m in heads if m not in mismatched]
        body = {
            "embedder": {
                "address": settings.embedder_address,
                "model_id": info.model_id if info else None,
                "error": ready_cache["error"],
            },
            "models": len(heads),
            "servable_models": len(servable),
            "embedder_mismatch": mismatched,
            "load_errors": runtime.heads.errors,
        }
        if info is None or not servable:
            why = "the embedding service is unreachable" if info is None else "no model can be served"
            error = NotReady(why)
            return _json(
                {"status": "not ready", "reason": why, **body}, error.status, {"Retry-After": str(error.retry_after_s)}
            )
        return _json({"status": "ready", **body})

    @app.get("/metrics")
    def prometheus() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, mimetype=content_type.split(";")[0], content_type=content_type)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return _json(openapi_document(settings))

    return app
