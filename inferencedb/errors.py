"""The inference database's errors. They name what went wrong, never an HTTP status: the router
maps them in one table (api/errors.py `from_database_error`), the CLIs print their message."""

from __future__ import annotations


class InferenceDbError(Exception):
    code = "database_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class DatabaseUnavailable(InferenceDbError):
    """The database did not answer in time, refused the connection, or failed the statement."""

    code = "database_unavailable"


class InvalidInstant(InferenceDbError):
    """A report bound that is not an RFC 3339 date or date-time with an offset."""

    code = "invalid_instant"


class InvalidWindow(InferenceDbError):
    """Well-formed bounds that make no window: since not before until, a span over the limit, or
    an instant outside the calendar the database can count in."""

    code = "invalid_window"


class InvalidKey(InferenceDbError):
    """An API key that is missing, malformed, unknown or revoked."""

    code = "invalid_key"
