"""Error codes, the exception hierarchy and the one mapping from exceptions to wire errors.

Codes follow JSON-RPC 2.0 and MCP (taken from ``mcp_types`` so they never drift). Codes in the
implementation-defined band ``-32000..-32019`` that MCP leaves free are ours.
"""

from __future__ import annotations

from typing import Any, Final

from mcp_types.jsonrpc import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REQUEST_TIMEOUT,
)
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "CONNECTION_CLOSED",
    "DEAD_LETTERED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MESSAGE_TOO_LARGE",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "REQUEST_TIMEOUT",
    "UNAVAILABLE",
    "UNSUPPORTED_VERSION",
    "ConnectionClosed",
    "ControlSignal",
    "ErrorData",
    "InvalidParams",
    "InvalidRequest",
    "MeetaraError",
    "MessageTooLarge",
    "MethodNotFound",
    "ParseError",
    "RejectMessage",
    "RequestTimeout",
    "RetryLater",
    "RpcError",
    "Unavailable",
    "UnsupportedVersion",
    "error_from_exception",
    "summarize_validation_error",
]

MESSAGE_TOO_LARGE: Final = -32010
"""The encoded message exceeds the configured size limit."""

DEAD_LETTERED: Final = -32011
"""The request failed on every allowed delivery and was moved to the dead-letter stream."""

UNAVAILABLE: Final = -32012
"""No live instance can serve the request (agent not running, broker unreachable)."""

UNSUPPORTED_VERSION: Final = -32013
"""The message was written by an incompatible protocol version."""


class ErrorData(BaseModel):
    """The ``error`` member of a JSON-RPC error response."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: int
    """One of the error-code constants of this module."""
    message: str
    """One short sentence saying what went wrong; never a traceback or a dump of the input."""
    data: Any = None
    """Optional structured detail (for invalid params: the failing fields and reasons)."""


class MeetaraError(Exception):
    """Root of every exception this project raises on purpose."""


class RpcError(MeetaraError):
    """An error that round-trips to the wire as a JSON-RPC error object."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str, *, data: Any = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code

    def to_error_data(self) -> ErrorData:
        return ErrorData(code=self.code, message=self.message, data=self.data)

    @classmethod
    def from_error_data(cls, error: ErrorData) -> RpcError:
        """Rebuild the most specific exception class for a wire error."""
        klass = _BY_CODE.get(error.code)
        if klass is None:
            return RpcError(error.message, data=error.data, code=error.code)
        return klass(error.message, data=error.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class ParseError(RpcError):
    """The bytes are not JSON, or not our wire format."""

    code = PARSE_ERROR


class InvalidRequest(RpcError):
    """The JSON is not a valid envelope (unknown field, wrong type, unknown method shape)."""

    code = INVALID_REQUEST


class MethodNotFound(RpcError):
    """The receiver has no such method or tool."""

    code = METHOD_NOT_FOUND


class InvalidParams(RpcError):
    """The arguments failed validation against the tool's input model."""

    code = INVALID_PARAMS


class RequestTimeout(RpcError):
    """No response arrived before the request's deadline."""

    code = REQUEST_TIMEOUT


class ConnectionClosed(RpcError):
    """The transport closed while a response was still awaited."""

    code = CONNECTION_CLOSED


class MessageTooLarge(RpcError):
    """The encoded message is over the size limit; send an artifact reference instead."""

    code = MESSAGE_TOO_LARGE


class Unavailable(RpcError):
    """The broker or the target agent cannot be reached."""

    code = UNAVAILABLE


class UnsupportedVersion(RpcError):
    """The message was written by an incompatible protocol version."""

    code = UNSUPPORTED_VERSION


_BY_CODE: dict[int, type[RpcError]] = {
    k.code: k
    for k in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        RequestTimeout,
        ConnectionClosed,
        MessageTooLarge,
        Unavailable,
        UnsupportedVersion,
    )
}


class ControlSignal(MeetaraError):
    """Raised by a handler to steer delivery rather than to report a failure."""


class RetryLater(ControlSignal):
    """Leave the message pending; it is redelivered after the reclaim idle time."""


class RejectMessage(ControlSignal):
    """Move the message to the dead-letter stream now, without further retries."""


def summarize_validation_error(exc: ValidationError) -> list[dict[str, str]]:
    """The failing locations and reasons, without echoing the (possibly huge) input."""
    return [
        {"loc": ".".join(str(p) for p in err["loc"]) or "(root)", "msg": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def error_from_exception(exc: BaseException) -> ErrorData:
    """Map any exception to the wire error a caller should see.

    Validation failures become invalid params with a field list; ``RpcError`` keeps its code;
    anything else is an internal error that names only the exception type and message.
    """
    if isinstance(exc, RpcError):
        return exc.to_error_data()
    if isinstance(exc, ValidationError):
        return ErrorData(
            code=INVALID_PARAMS,
            message=f"invalid {exc.title}: {exc.error_count()} error(s)",
            data={"errors": summarize_validation_error(exc)},
        )
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return ErrorData(code=INTERNAL_ERROR, message=f"{type(exc).__name__}: {text}".rstrip(": "))
