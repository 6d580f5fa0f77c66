"""The router's errors and their one mapping to HTTP.

Every failure becomes `{"error": {"code", "message", "request_id"}}` with the status below; the
Flask adapter (api/web/app.py) does the rendering, the rest of the router only raises. Errors of
the embedder client and of the inference database are translated here, in one table each.

    400 bad_request        malformed JSON (any failure to parse), wrong content type
    401 unauthorized       missing, malformed, unknown or revoked API key
    403 forbidden          a tenant key acting for another tenant, or an operator action
    404 not_found          unknown model or route
    405 method_not_allowed the Allow header lists the methods the route has
    409 conflict           a serving change the model's versions or serving state does not allow
    409 gate_refused       a gated promotion the evidence does not support (the body has the decision)
    413 payload_too_large  body, text or text count over a limit (the message names it)
    422 invalid_request    missing / extra fields, wrong types, empty text (the message names the field)
    422 invalid_window     a report window that is inverted, too long or outside the calendar
    422 unknown_label      feedback with a label the answering version does not have
    429 overloaded         the embedder's queue is full (Retry-After)
    502 embedder_error     the embedder failed on this batch
    503 embedder_unavailable / embedder_mismatch / not_ready / database_unavailable
    500 head_error         the head failed and the model has no fallback that could answer
    500 internal           anything unexpected (logged with its traceback, never shown)
"""

from __future__ import annotations

from embedder.errors import (
    DeadlineExceeded,
    EmbedderError,
    FeaturesUnsupported,
    InputTooLarge,
    InvalidInput,
    ModelFailure,
    Overloaded,
    Unavailable,
)
from inferencedb import errors as db_errors


class ApiError(Exception):
    status = 500
    code = "internal"
    retry_after_s: int | None = None
    details: dict | None = None  # more fields of the error body, declared in ErrorDetail (schemas.py)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"

    def __init__(self, message: str, *, allowed: tuple[str, ...] = ()):
        super().__init__(message)
        self.allowed = allowed  # the methods the resource has (the Allow header, RFC 9110)


class Conflict(ApiError):
    status, code = 409, "conflict"


class GateRefused(Conflict):
    """A gated promotion the evidence does not support; the body carries the gate's decision."""

    code = "gate_refused"

    def __init__(self, message: str, *, decision: dict):
        super().__init__(message)
        self.details = {"decision": decision}


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class InvalidRequest(ApiError):
    status, code = 422, "invalid_request"


class InvalidWindow(InvalidRequest):
    """Well-formed dates that make no window: since not before until, a span over the limit, or
    an instant outside the calendar the router can count in."""

    code = "invalid_window"


class UnknownLabel(InvalidRequest):
    """Feedback naming a label that the version which answered the prediction does not have."""

    code = "unknown_label"


class EmbedderOverloaded(ApiError):
    status, code, retry_after_s = 429, "overloaded", 1


class EmbedderFailed(ApiError):
    status, code = 502, "embedder_error"


class EmbedderUnavailable(ApiError):
    status, code, retry_after_s = 503, "embedder_unavailable", 1


class EmbedderMismatch(ApiError):
    """The running embedder is not the one the head was trained with: its vectors would be garbage."""

    status, code = 503, "embedder_mismatch"


class HeadFailed(ApiError):
    """A head raised while scoring (a bug or a bad artifact); the fallback answers if there is one."""

    status, code = 500, "head_error"


class NotReady(ApiError):
    status, code, retry_after_s = 503, "not_ready", 1


class DatabaseUnavailable(ApiError):
    status, code, retry_after_s = 503, "database_unavailable", 1


# One table from embedder errors to router errors (most specific first).
_FROM_EMBEDDER: list[tuple[type[EmbedderError], type[ApiError]]] = [
    (InputTooLarge, PayloadTooLarge),
    (InvalidInput, InvalidRequest),
    (FeaturesUnsupported, EmbedderMismatch),  # the head's feature set: the embedder's fault, not the caller's
    (Overloaded, EmbedderOverloaded),
    (DeadlineExceeded, EmbedderUnavailable),
    (Unavailable, EmbedderUnavailable),
    (ModelFailure, EmbedderFailed),
]


def from_embedder_error(error: EmbedderError) -> ApiError:
    for source, target in _FROM_EMBEDDER:
        if isinstance(error, source):
            if target is EmbedderUnavailable:
                return target(f"the embedding service is unavailable or timed out: {error.message}")
            return target(error.message)
    return EmbedderFailed(error.message)


# One table from inference-database errors to router errors.
_FROM_DATABASE: dict[type[db_errors.InferenceDbError], type[ApiError]] = {
    db_errors.DatabaseUnavailable: DatabaseUnavailable,
    db_errors.InvalidInstant: InvalidRequest,
    db_errors.InvalidWindow: InvalidWindow,
    db_errors.InvalidKey: Unauthorized,
}


def from_database_error(error: db_errors.InferenceDbError) -> ApiError:
    for source, target in _FROM_DATABASE.items():
        if isinstance(error, source):
            return target(error.message)
    return ApiError(error.message)
