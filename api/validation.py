"""Validation of predict requests: plain data in, a checked PredictRequest or an ApiError out.

{"text": "..."} or {"texts": ["...", ...]}, optionally "top_k": 1..max_top_k
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from api.errors import InvalidRequest, PayloadTooLarge
from embedder.normalize import is_blank

ALLOWED_FIELDS = ("text", "texts", "top_k")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class Limits:
    max_texts: int
    max_text_chars: int
    max_top_k: int
    default_top_k: int


@dataclass(frozen=True)
class PredictRequest:
    texts: list[str]
    top_k: int


def _check_text(value: object, field: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string, got {type(value).__name__}")
    if len(value) > limits.max_text_chars:
        raise PayloadTooLarge(f"{field} has {len(value)} characters; the limit is {limits.max_text_chars}")
    if is_blank(value):
        raise InvalidRequest(f"{field} is empty or whitespace-only")
    return value


def parse_predict(body: object, limits: Limits) -> PredictRequest:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {type(body).__name__}")
    extra = sorted(set(body) - set(ALLOWED_FIELDS))
    if extra:
        raise InvalidRequest(f"unknown field(s) {', '.join(extra)}; allowed: {', '.join(ALLOWED_FIELDS)}")
    if ("text" in body) == ("texts" in body):
        raise InvalidRequest("give exactly one of the fields text or texts")
    if "text" in body:
        texts = [_check_text(body["text"], "text", limits)]
    else:
        items = body["texts"]
        if not isinstance(items, list):
            raise InvalidRequest(f"texts must be a list of strings, got {type(items).__name__}")
        if not items:
            raise InvalidRequest("texts must not be empty")
        if len(items) > limits.max_texts:
            raise PayloadTooLarge(f"too many texts: {len(items)}; the limit is {limits.max_texts} per request")
        texts = [_check_text(item, f"texts[{i}]", limits) for i, item in enumerate(items)]
    top_k = body.get("top_k", limits.default_top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise InvalidRequest(f"top_k must be an integer, got {type(top_k).__name__}")
    if not 1 <= top_k <= limits.max_top_k:
        raise InvalidRequest(f"top_k must be between 1 and {limits.max_top_k}, got {top_k}")
    return PredictRequest(texts, top_k)


def check_request_id(value: str | None) -> str | None:
    """A client-supplied X-Request-ID, if it is safe to echo and to store; None if absent."""
    if value is None:
        return None
    if not REQUEST_ID.fullmatch(value):
        raise InvalidRequest("header X-Request-ID must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
    return value
