"""The one mapping between embedder errors and gRPC status codes, used by server and client."""

from __future__ import annotations

import grpc

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

# Most specific class first: the server picks the first match.
ERROR_TO_CODE: list[tuple[type[EmbedderError], grpc.StatusCode]] = [
    (InputTooLarge, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (FeaturesUnsupported, grpc.StatusCode.FAILED_PRECONDITION),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (ModelFailure, grpc.StatusCode.INTERNAL),
]

CODE_TO_ERROR: dict[grpc.StatusCode, type[EmbedderError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.FAILED_PRECONDITION: FeaturesUnsupported,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INTERNAL: ModelFailure,
}

# A limit breach travels as INVALID_ARGUMENT; this prefix in the message lets the client
# raise InputTooLarge again (HTTP 413 rather than 422 in the router).
TOO_LARGE_PREFIX = "limit exceeded: "


def code_for(error: EmbedderError) -> grpc.StatusCode:
    for cls, code in ERROR_TO_CODE:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def details_for(error: EmbedderError) -> str:
    return TOO_LARGE_PREFIX + error.message if isinstance(error, InputTooLarge) else error.message


def error_from_rpc(error: grpc.RpcError) -> EmbedderError:
    """The embedder error a failed RPC stands for (Unavailable for codes it does not map)."""
    code = error.code()
    details = error.details() or code.name
    if code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith(TOO_LARGE_PREFIX):
        return InputTooLarge(details[len(TOO_LARGE_PREFIX) :])
    cls = CODE_TO_ERROR.get(code)
    if cls is None:
        return Unavailable(f"embedder RPC failed: {code.name}: {details}")
    return cls(details)
