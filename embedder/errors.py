"""The embedder's error hierarchy, free of any transport.

Each error carries the HTTP-like status a transport maps it to; the gRPC mapping lives in
embedder/grpc_codes.py, the HTTP one in the router. Clients raise the same classes, so a caller
handles "overloaded" the same way whether the embedder runs in-process or behind gRPC.
"""

from __future__ import annotations


class EmbedderError(Exception):
    """Base class. `status` is the HTTP-like code used by every transport mapping."""

    status = 500
    code = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(EmbedderError):
    status = 422
    code = "invalid_input"


class InputTooLarge(InvalidInput):
    """A limit on text length or text count was exceeded; the message names the limit."""

    status = 413
    code = "input_too_large"


class FeaturesUnsupported(EmbedderError):
    """The model cannot produce the feature set asked for (embedder/features.py): e.g. an older
    build without pooled layers. The caller's input is fine; the embedder is not the one it needs."""

    status = 503
    code = "features_unsupported"


class Overloaded(EmbedderError):
    """The batching queue is full: retry later. Never retried blindly by the client."""

    status = 429
    code = "overloaded"


class DeadlineExceeded(EmbedderError):
    status = 504
    code = "deadline_exceeded"


class Unavailable(EmbedderError):
    """The service cannot be reached, or is shutting down."""

    status = 503
    code = "unavailable"


class ModelFailure(EmbedderError):
    """The model call for a batch failed; every request in that batch gets this error."""

    status = 500
    code = "model_failure"
