"""Validation of request data: plain data in, checked values or an ApiError out.

Predict bodies, {"text": "..."} or {"texts": ["...", ...]}, optionally "top_k": 1..max_top_k;
operator serving changes; integers as the contract (JSON Schema) counts them; the X-Request-ID
and X-Request-Timeout-Ms headers. The contract (api/web/openapi.py) takes its patterns and tables
from here, so that it states what is enforced.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass

from api.errors import InvalidRequest, PayloadTooLarge
from embedder.normalize import is_blank
from heads.names import VERSION_NAME
from heads.serving_state import CANDIDATE_KEYS

ALLOWED_FIELDS = ("text", "texts", "top_k")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TIMEOUT_MS = re.compile(r"^[0-9]{1,5}$")  # ASCII digits only: str.isdigit() also admits "²"
MAX_TIMEOUT_MS = 60_000
_JSON_TYPES = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


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


def integer(value: object, field: str) -> int:
    """An integer as JSON Schema counts them: 2 and 2.0 are integers, 2.5 and true are not."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise InvalidRequest(f"{field} must be an integer, got {json_type(value)}")


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _check_text(value: object, field: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string, got {json_type(value)}")
    if len(value) > limits.max_text_chars:
        raise PayloadTooLarge(f"{field} has {len(value)} characters; the limit is {limits.max_text_chars}")
    if is_blank(value):
        raise InvalidRequest(f"{field} is empty or whitespace-only")
    return value


def parse_predict(body: object, limits: Limits) -> PredictRequest:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {json_type(body)}")
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
            raise InvalidRequest(f"texts must be an array of strings, got {json_type(items)}")
        if not items:
            raise InvalidRequest("texts must not be empty")
        if len(items) > limits.max_texts:
            raise PayloadTooLarge(f"too many texts: {len(items)}; the limit is {limits.max_texts} per request")
        texts = [_check_text(item, f"texts[{i}]", limits) for i, item in enumerate(items)]
    top_k = integer(body.get("top_k", limits.default_top_k), "top_k")
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


def request_timeout_s(value: str | None) -> float | None:
    """X-Request-Timeout-Ms: the caller's deadline for this request (1-60000 ms); None if absent."""
    if value is None:
        return None
    if not TIMEOUT_MS.fullmatch(value) or not 1 <= int(value) <= MAX_TIMEOUT_MS:
        raise InvalidRequest(f"header X-Request-Timeout-Ms must be an integer between 1 and {MAX_TIMEOUT_MS}")
    return int(value) / 1000


@functools.cache
def not_blank_pattern() -> str:
    """A regular expression that finds a character `is_blank` does not skip: the contract's
    pattern for a text, derived from the very rule that refuses blank texts (computed once).
    BMP characters are written as \\uXXXX, which Python, Rust and ECMAScript regexes all read;
    the few beyond it stand as themselves."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if is_blank(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    spans = (_regex_char(a) if a == b else f"{_regex_char(a)}-{_regex_char(b)}" for a, b in ranges)
    return f"[^{''.join(spans)}]"


def _regex_char(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


# POST /v1/models/<model>/serving: the fields each action needs (the contract's oneOf is built
# from this table); fraction, percent, key and reason are optional where they apply.
SERVING_REQUIRED = {
    "promote": ("version",),
    "shadow": ("version",),
    "unshadow": ("version",),
    "ab": ("version", "percent"),
    "ab_off": (),
    "fallback": ("version",),
    "fallback_off": (),
    "rollback": (),
}
SERVING_FIELDS = ("action", "version", "fraction", "percent", "key", "reason")
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class ServingChange:
    action: str
    options: dict  # version, fraction, percent, key: the keyword arguments of heads.serving_state.operation
    reason: str | None


def parse_serving_change(body: object) -> ServingChange:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {json_type(body)}")
    extra = sorted(set(body) - set(SERVING_FIELDS))
    if extra:
        raise InvalidRequest(f"unknown field(s) {', '.join(extra)}; allowed: {', '.join(SERVING_FIELDS)}")
    action = body.get("action")
    if not isinstance(action, str) or action not in SERVING_REQUIRED:
        raise InvalidRequest(f"action must be one of {', '.join(SERVING_REQUIRED)}, got {action!r}")
    missing = [name for name in SERVING_REQUIRED[action] if name not in body]
    if missing:
        raise InvalidRequest(f"{action} needs the field(s) {', '.join(missing)}")
    options = {}
    if "version" in body:
        version = body["version"]
        if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
            raise InvalidRequest(f"version must be a version name ({VERSION_NAME.pattern}), got {version!r}"[:300])
        options["version"] = version
    if "fraction" in body:
        options["fraction"] = _number(body["fraction"], "fraction", 0, 1, low_open=True)
    if "percent" in body:
        options["percent"] = _number(body["percent"], "percent", 0, 100)
    if "key" in body:
        if not isinstance(body["key"], str) or body["key"] not in CANDIDATE_KEYS:
            raise InvalidRequest(f"key must be one of {', '.join(CANDIDATE_KEYS)}")
        options["key"] = body["key"]
    reason = body.get("reason")
    if "reason" in body and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise InvalidRequest(f"reason must be a string of at most {MAX_REASON_CHARS} characters")
    return ServingChange(action, options, reason)


def _number(value: object, field: str, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{field} must be a number, got {json_type(value)}")
    if not (low < value if low_open else low <= value) or not value <= high:
        raise InvalidRequest(f"{field} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}")
    return float(value)


@dataclass(frozen=True)
class FeedbackRequest:
    label: str
    item_index: int


def parse_feedback(body: object) -> FeedbackRequest:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {json_type(body)}")
    extra = sorted(set(body) - {"label", "item_index"})
    if extra:
        raise InvalidRequest(f"unknown field(s) {', '.join(extra)}; allowed: label, item_index")
    if "label" not in body:
        raise InvalidRequest("the field label is required")
    label = body["label"]
    if not isinstance(label, str) or not label:
        raise InvalidRequest(f"label must be a non-empty string, got {json_type(label)}")
    index = integer(body.get("item_index", 0), "item_index")
    if index < 0:
        raise InvalidRequest(f"item_index must be >= 0, got {index}")
    return FeedbackRequest(label, index)
