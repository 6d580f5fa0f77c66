"""Helpers shared by the Flask routes: JSON responses, the one error rendering, request bodies,
and the request's runtime and tenant."""

from __future__ import annotations

import json
import re

import orjson
from flask import Response, current_app, g, request

from api.core import metrics
from api.errors import ApiError, BadRequest, MethodNotAllowed

JSON = "application/json"
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_response(payload: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(encode_json(payload), status=status, mimetype=JSON, headers=headers)


def encode_json(payload: object) -> bytes:
    """UTF-8 JSON. orjson writes a predict answer in 0.4 us against json.dumps' 6.6 us (a
    one-text answer with top_k, AVX-512 EPYC): a small share of a request (make bench-router
    measured no difference beyond its noise of about 50 us). What orjson refuses (a non-str key,
    a numpy scalar) goes to json.dumps as before. NaN and infinities come out as null, where
    json.dumps wrote tokens that are not JSON."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload, ensure_ascii=False).encode()


def error_response(error: ApiError) -> Response:
    metrics.ERRORS.labels(error.code).inc()
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else {}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="manyheads"'
    if isinstance(error, MethodNotAllowed) and error.allowed:
        headers["Allow"] = ", ".join(error.allowed)
    body = {"error": {"code": error.code, "message": error.message, "request_id": getattr(g, "request_id", None)}}
    if error.details:
        body["error"].update(error.details)
    return json_response(body, error.status, headers or None)


def json_body() -> object:
    """The request's JSON body: 400 for another Content-Type or malformed JSON."""
    if request.mimetype != JSON:
        raise BadRequest(f"Content-Type must be {JSON}, got {request.mimetype or 'nothing'}")
    return parse_json(request.get_data(cache=False))


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def parse_json(data: bytes) -> object:
    """Strict JSON (RFC 8259, and I-JSON's Unicode rule): every way a body can fail to be JSON is
    one BadRequest, never another exception. Refused: invalid UTF-8, syntax errors, NaN and
    Infinity, integers longer than Python parses, nesting deeper than the parser recurses, and
    strings with an unpaired UTF-16 surrogate (no UTF-8 can carry them on to the embedder, the
    database or a file)."""
    try:
        value = json.loads(data, parse_constant=_not_json)
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit, _not_json
        raise BadRequest(f"malformed JSON: {exc}") from None
    if _holds_surrogate(value):
        raise BadRequest("malformed JSON: a string holds an unpaired UTF-16 surrogate")
    return value


def _holds_surrogate(value: object) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def runtime():
    return current_app.extensions["manyheads"]


def settings():
    return current_app.extensions["manyheads"].settings
