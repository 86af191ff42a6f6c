"""The server's errors, and the one place they become wire statuses.

Every error a client can cause is an :class:`ApiError` with an HTTP status, the OpenAI error shape's
``type`` / ``code`` / ``param``, and the gRPC status code the gRPC transport answers with. Transports
translate an ``ApiError`` once, at their edge (``http.py``, ``grpc``), never per route.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: Characters of a client's value that a message quotes at most (the rest is counted, not echoed).
QUOTE_CHARS = 64


def quote_input(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for an error message, with at most ``limit`` characters of a client's string.

    A longer value is cut and its length stated (``'xxxx...' (100000 characters)``), so a message
    stays small whatever the client sent: over gRPC a status message travels as metadata, and one
    past the metadata limit reaches the client as RESOURCE_EXHAUSTED instead of its real status.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return f"an integer of {value.bit_length()} bits"  # repr would be long (or refused past 4300 digits)
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class ApiError(Exception):
    """An error the client caused (or overload / draining), with its statuses.

    Attributes:
        status: HTTP status.
        grpc_code: name of the ``grpc.StatusCode`` member (e.g. "INVALID_ARGUMENT").
        type: OpenAI's error ``type`` ("invalid_request_error", ...).
        code: a short machine-readable code, or None.
        param: the request field at fault, or None.
        headers: extra HTTP headers (``retry-after-ms`` on 429).
    """

    status: ClassVar[int] = 400
    grpc_code: ClassVar[str] = "INVALID_ARGUMENT"
    type: ClassVar[str] = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(ApiError):
    """400: the request is malformed or asks for something impossible (names the field)."""


class Unauthorized(ApiError):
    status = 401
    grpc_code = "UNAUTHENTICATED"
    type = "authentication_error"


class ModelNotFound(ApiError):
    status = 404
    grpc_code = "NOT_FOUND"
    type = "not_found_error"


class RouteNotFound(ApiError):
    status = 404
    grpc_code = "UNIMPLEMENTED"
    type = "not_found_error"


class MethodNotAllowed(ApiError):
    status = 405
    grpc_code = "UNIMPLEMENTED"


class PayloadTooLarge(ApiError):
    """413: the body, the input count or one input is over a configured limit."""

    status = 413
    grpc_code = "INVALID_ARGUMENT"


class InputTooLong(ApiError):
    """422: an input (or a rerank pair) over the model's max length with truncation off. TEI answers
    it so on every route (its ``Validation`` errors are 422 since its #818, 413 before); the OpenAI
    route answers 400 instead, as OpenAI answers a context that is too long (:meth:`as_openai`).
    INVALID_ARGUMENT over gRPC, as TEI's gRPC answers."""

    status = 422
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param, code="input_too_long")

    def as_openai(self) -> BadRequest:
        """The same error as OpenAI's API answers it: 400."""
        return BadRequest(self.message, param=self.param, code=self.code)


class Overloaded(ApiError):
    """429: the model's queue is full; the client should retry after ``retry-after-ms``."""

    status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    type = "rate_limit_error"


class Draining(ApiError):
    """503: the server is shutting down and takes no new work."""

    status = 503
    grpc_code = "UNAVAILABLE"
    type = "service_unavailable"


class EngineFailure(ApiError):
    """500: the engine failed on input that passed validation (a bug or a broken model, never client input)."""

    status = 500
    grpc_code = "INTERNAL"
    type = "server_error"
