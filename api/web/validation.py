"""Validation of request data: plain data in, checked values or an ApiError out.

Bodies are checked by their models in api/web/schemas.py, the same models that write the
contract (api/web/openapi.py), so it states what is enforced; here pydantic's errors become one
ApiError with a message that names the field. Also: integers as the contract (JSON Schema) counts
them, and the X-Request-ID and X-Request-Timeout-Ms headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import MISSING, BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from api.core.requests import Limits, PredictRequest
from api.errors import ApiError, InvalidRequest, PayloadTooLarge
from api.web import schemas
from api.web.schemas import MAX_REASON_CHARS, FeedbackRequest, not_blank_pattern
from heads.names import VERSION_NAME
from heads.rollback_guard import make_guard

# What callers import from here (Limits, FeedbackRequest and not_blank_pattern live in schemas).
__all__ = [
    "FeedbackRequest",
    "Limits",
    "PredictRequest",
    "ServingChange",
    "check_request_id",
    "integer",
    "json_type",
    "not_blank_pattern",
    "parse_explain",
    "parse_feedback",
    "parse_predict",
    "parse_serving_change",
    "request_timeout_s",
]

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
_INTEGER = TypeAdapter(schemas.JsonInteger)
GUARD_FIELDS = {"window_s", "max_error_rate", "max_reject_rate", "min_agreement", "min_items", "shadow_fraction"}


@dataclass(frozen=True)
class ServingChange:
    action: str
    options: dict  # version, fraction, percent, key: the keyword arguments of heads.serving_state.operation
    reason: str | None
    gate: dict | None = None  # a gated promote: {"margin", "min_items"}, each given or None (the gate's default)


def parse_predict(body: object, limits: Limits) -> PredictRequest:
    model = schemas.predict_request_model(limits)  # built once per Limits
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        raise _refusal(exc, model) from None
    return PredictRequest([parsed.text] if parsed.texts is MISSING else parsed.texts, parsed.top_k)


def parse_explain(body: object, limits: Limits) -> str:
    """The text to explain, held to the predict request's character limit."""
    model = schemas.explain_request_model(limits.max_text_chars)
    try:
        return model.model_validate(body).text
    except ValidationError as exc:
        raise _refusal(exc, model) from None


def parse_feedback(body: object) -> FeedbackRequest:
    try:
        return FeedbackRequest.model_validate(body)
    except ValidationError as exc:
        raise _refusal(exc, FeedbackRequest) from None


def parse_serving_change(body: object) -> ServingChange:
    try:
        parsed = schemas.ServingChange.model_validate(body)
    except ValidationError as exc:
        raise _refusal(exc, schemas.ServingChange) from None
    options = parsed.model_dump(include={"version", "fraction", "percent", "key"})  # MISSING ones are left out
    if parsed.action == "guard":
        options["guard"] = make_guard(**parsed.model_dump(include=GUARD_FIELDS))
    gate = None
    if parsed.action == "promote" and parsed.if_better is True:
        gate = {
            name: None if value is MISSING else value
            for name, value in (("margin", parsed.margin), ("min_items", parsed.min_items))
        }
    return ServingChange(parsed.action, options, None if parsed.reason is MISSING else parsed.reason, gate)


def integer(value: object, field: str) -> int:
    """An integer as JSON Schema counts them: 2 and 2.0 are integers, 2.5 and true are not."""
    try:
        return _INTEGER.validate_python(value)
    except ValidationError:
        raise InvalidRequest(f"{field} must be an integer, got {json_type(value)}") from None


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


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


# From pydantic's errors to one ApiError. Unknown fields are named first, all at once; otherwise
# the first error speaks, in these words. Text fields say more: a text over its limit, or too
# many texts, is a 413, and a text with nothing to classify is "empty or whitespace-only".
_TEXT_FIELDS = ("text", "texts")
_TYPES = {
    "model_type": "a JSON object",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
}
_RANGES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
# Fields whose every refusal, of type or of value, reads as one rule.
_RULES = {
    "version": f"a version name ({VERSION_NAME.pattern})",
    "reason": f"a string of at most {MAX_REASON_CHARS} characters",
    "label": "a non-empty string",
}


def _refusal(exc: ValidationError, model: type[BaseModel]) -> ApiError:
    errors = exc.errors(include_url=False)
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return InvalidRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(model.model_fields)}")
    return _explain(errors[0], model)


def _explain(error: ErrorDetails, model: type[BaseModel]) -> ApiError:
    kind, loc, value, context = error["type"], error["loc"], error["input"], error.get("ctx", {})
    if not loc:  # the body as a whole, or a rule across fields (the model's own words)
        return InvalidRequest(
            f"the body must be a JSON object, got {json_type(value)}" if kind in _TYPES else error["msg"]
        )
    name, info = str(loc[0]), model.model_fields[str(loc[0])]
    field = name + "".join(f"[{index}]" for index in loc[1:])
    if kind == "missing":
        return InvalidRequest(f"the field {field} is required")
    if name in _TEXT_FIELDS:
        if kind == "string_too_long":
            return PayloadTooLarge(f"{field} has {len(value)} characters; the limit is {context['max_length']}")
        if kind == "too_long":
            return PayloadTooLarge(f"too many texts: {len(value)}; the limit is {context['max_length']} per request")
        if kind in ("string_too_short", "string_pattern_mismatch"):
            return InvalidRequest(f"{field} is empty or whitespace-only")
    if name in _RULES:
        return InvalidRequest(f"{field} must be {_RULES[name]}, got {_shown(value)}")
    if kind in _TYPES:
        return InvalidRequest(f"{field} must be {_TYPES[kind]}, got {json_type(value)}")
    if kind in _RANGES:
        return InvalidRequest(f"{field} must be {_range(info, context)}, got {_shown(value)}")
    if kind == "literal_error":
        return InvalidRequest(f"{field} must be one of {context['expected']}, got {_shown(value)}")
    if kind == "too_short":
        return InvalidRequest(f"{field} must not be empty")
    return InvalidRequest(f"{field}: {error['msg']}")


def _shown(value: object) -> str:
    """A refused value in a message: strings and numbers themselves (shortened), else their type."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else f"{value[:60]}...")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**20 else f"{str(value)[:20]}..."
    return json_type(value)


def _range(info: FieldInfo, context: dict) -> str:
    """The numbers a field admits, in words, from its constraints: "between 1 and 20" (integers),
    "in (0, 1]" (other numbers), ">= 0" (one bound). A bound inside the field's type (an integer
    that may be MISSING) is not in its metadata: the error's context names the one it broke."""
    bounds = {name: getattr(item, name) for item in info.metadata for name in _SIGNS if hasattr(item, name)}
    bounds = bounds or {name: context[name] for name in _SIGNS if name in context}
    if {"ge", "le"} <= bounds.keys() and info.annotation is int:
        return f"between {bounds['ge']} and {bounds['le']}"
    if bounds.keys() & {"ge", "gt"} and bounds.keys() & {"le", "lt"}:
        low = f"[{bounds['ge']:g}" if "ge" in bounds else f"({bounds['gt']:g}"
        high = f"{bounds['le']:g}]" if "le" in bounds else f"{bounds['lt']:g})"
        return f"in {low}, {high}"
    return " and ".join(f"{_SIGNS[name]} {value:g}" for name, value in bounds.items())
