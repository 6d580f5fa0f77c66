"""Helpers shared by the Flask routes: JSON responses, the one error rendering, request bodies,
and the request's runtime and tenant."""

from __future__ import annotations

import json

from flask import Response, current_app, g, request

from api import metrics
from api.errors import ApiError, BadRequest

JSON = "application/json"


def json_response(payload: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype=JSON, headers=headers)


def error_response(error: ApiError) -> Response:
    metrics.ERRORS.labels(error.code).inc()
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else {}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="manyheads"'
    body = {"error": {"code": error.code, "message": error.message, "request_id": getattr(g, "request_id", None)}}
    return json_response(body, error.status, headers or None)


def json_body() -> object:
    """The request's JSON body: 400 for another Content-Type or malformed JSON."""
    if request.mimetype != JSON:
        raise BadRequest(f"Content-Type must be {JSON}, got {request.mimetype or 'nothing'}")
    try:
        return json.loads(request.get_data(cache=False))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def runtime():
    return current_app.extensions["manyheads"]


def settings():
    return current_app.extensions["manyheads"].settings
