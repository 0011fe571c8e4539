"""JSON-RPC 2.0 messages in MCP's shape, and the bus envelope that carries them."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeAlias, TypeVar

from pydantic import Discriminator, Field, Tag

from protocol._base import Name, StreamName, WireModel, new_id, now
from protocol._errors import ErrorData
from protocol._version import PROTOCOL_VERSION

__all__ = [
    "AgentEvent",
    "AgentEventNotification",
    "BusMeta",
    "CallToolParams",
    "CallToolRequest",
    "Envelope",
    "ErrorResponse",
    "JobEvent",
    "JobEventNotification",
    "ListToolsParams",
    "ListToolsRequest",
    "Message",
    "Notification",
    "PingRequest",
    "ProgressNotification",
    "ProgressParams",
    "Request",
    "RequestId",
    "RequestMeta",
    "ResultResponse",
]

RequestId: TypeAlias = Annotated[int, Field(strict=True)] | Annotated[str, Field(max_length=200)]
"""A JSON-RPC request id."""

ProgressToken: TypeAlias = Annotated[int, Field(strict=True)] | Annotated[str, Field(max_length=200)]
"""Opaque token a caller attaches to a request to receive progress notifications."""

ParamsT = TypeVar("ParamsT")
MethodT = TypeVar("MethodT", bound=str)


class RequestMeta(WireModel):
    """The ``_meta`` member of request params (MCP)."""

    progress_token: ProgressToken | None = None
    """If set, the receiver publishes ``notifications/progress`` carrying this token."""


class ListToolsParams(WireModel):
    """Params of ``tools/list``."""

    meta: RequestMeta | None = Field(default=None, alias="_meta")
    """MCP request metadata."""
    cursor: str | None = None
    """Pagination cursor from a previous result."""


class CallToolParams(WireModel):
    """Params of ``tools/call``."""

    meta: RequestMeta | None = Field(default=None, alias="_meta")
    """MCP request metadata (progress token)."""
    name: Name
    """The tool to call."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Arguments, validated by the receiver against the tool's input model."""


class PingParams(WireModel):
    """Params of ``ping`` (none but metadata)."""

    meta: RequestMeta | None = Field(default=None, alias="_meta")
    """MCP request metadata."""


class Request(WireModel, Generic[ParamsT, MethodT]):
    """A JSON-RPC request; the receiver answers with a result or an error response."""

    jsonrpc: Literal["2.0"] = "2.0"
    """JSON-RPC version."""
    id: RequestId = Field(default_factory=new_id)
    """Request id, echoed by the response."""
    method: MethodT
    """The method name."""
    params: ParamsT
    """Method parameters."""


class CallToolRequest(Request[CallToolParams, Literal["tools/call"]]):
    """Call one tool of the receiving agent."""

    method: Literal["tools/call"] = "tools/call"
    """Always ``tools/call``."""


class ListToolsRequest(Request[ListToolsParams | None, Literal["tools/list"]]):
    """List the receiving agent's tools."""

    method: Literal["tools/list"] = "tools/list"
    """Always ``tools/list``."""
    params: ListToolsParams | None = None
    """Optional pagination."""


class PingRequest(Request[PingParams | None, Literal["ping"]]):
    """Liveness probe; answered with an empty result."""

    method: Literal["ping"] = "ping"
    """Always ``ping``."""
    params: PingParams | None = None
    """Unused."""


class Notification(WireModel, Generic[ParamsT, MethodT]):
    """A JSON-RPC notification: no id, no response."""

    jsonrpc: Literal["2.0"] = "2.0"
    """JSON-RPC version."""
    method: MethodT
    """The method name."""
    params: ParamsT
    """Notification parameters."""


class ProgressParams(WireModel):
    """Params of ``notifications/progress`` (MCP)."""

    progress_token: ProgressToken
    """The token from the request this progress belongs to."""
    progress: float
    """Progress so far; increases with every notification."""
    total: float | None = None
    """Total amount of work, when known."""
    message: str | None = None
    """Human-readable status."""
    meta: dict[str, Any] | None = Field(default=None, alias="_meta")
    """Measurements beside the count (loss, tokens/s…), in MCP's member for extensions."""


class ProgressNotification(Notification[ProgressParams, Literal["notifications/progress"]]):
    """Progress of a long-running request."""

    method: Literal["notifications/progress"] = "notifications/progress"
    """Always ``notifications/progress``."""


JobEventKind: TypeAlias = Literal[
    "submitted", "state_changed", "step_started", "step_finished", "progress", "waiting", "alert", "log"
]


class JobEvent(WireModel):
    """Something that happened to a job: state change, step boundary, progress, alert."""

    job_id: Annotated[str, Field(min_length=1, max_length=200)]
    """The job this event belongs to."""
    kind: JobEventKind
    """What happened."""
    state: str | None = None
    """The job's state after the event, when it changed."""
    step: str | None = None
    """The pipeline step concerned (data, train, convert…)."""
    progress: float | None = None
    """Work done within the step."""
    total: float | None = None
    """Total work of the step, when known."""
    message: str | None = None
    """Human-readable summary."""
    terminal: bool = False
    """True when the job will not change again (done, failed, cancelled, paused)."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Kind-specific details (loss, tokens/s, dollars…)."""
    at: float = Field(default_factory=now)
    """When it happened (epoch seconds)."""


class JobEventNotification(Notification[JobEvent, Literal["notifications/meetara/job_event"]]):
    """A job event on the events stream."""

    method: Literal["notifications/meetara/job_event"] = "notifications/meetara/job_event"
    """Always ``notifications/meetara/job_event``."""


class AgentEvent(WireModel):
    """An agent instance started or stopped."""

    kind: Literal["agent_started", "agent_stopped"]
    """What happened."""
    agent: Name
    """Agent name."""
    instance_id: Annotated[str, Field(min_length=1, max_length=200)]
    """The process-level instance."""
    at: float = Field(default_factory=now)
    """When it happened (epoch seconds)."""


class AgentEventNotification(Notification[AgentEvent, Literal["notifications/meetara/agent_event"]]):
    """An agent lifecycle event on the events stream."""

    method: Literal["notifications/meetara/agent_event"] = "notifications/meetara/agent_event"
    """Always ``notifications/meetara/agent_event``."""


class ResultResponse(WireModel):
    """A successful response; ``result`` is decoded by the caller for the method it called."""

    jsonrpc: Literal["2.0"] = "2.0"
    """JSON-RPC version."""
    id: RequestId
    """The id of the request answered."""
    result: dict[str, Any]
    """Method-specific result (``CallToolResult``, ``ListToolsResult``, …)."""


class ErrorResponse(WireModel):
    """An error response."""

    jsonrpc: Literal["2.0"] = "2.0"
    """JSON-RPC version."""
    id: RequestId | None = None
    """The id of the request answered; null (or absent) when it could not be read."""
    error: ErrorData
    """What went wrong."""


def _message_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        method = value.get("method")
        if isinstance(method, str):
            return method
        if "error" in value:
            return "error"
        if "result" in value:
            return "result"
        return None
    if isinstance(value, ErrorResponse):
        return "error"
    if isinstance(value, ResultResponse):
        return "result"
    method = getattr(value, "method", None)
    return method if isinstance(method, str) else None


Message: TypeAlias = Annotated[
    Annotated[CallToolRequest, Tag("tools/call")]
    | Annotated[ListToolsRequest, Tag("tools/list")]
    | Annotated[PingRequest, Tag("ping")]
    | Annotated[ProgressNotification, Tag("notifications/progress")]
    | Annotated[JobEventNotification, Tag("notifications/meetara/job_event")]
    | Annotated[AgentEventNotification, Tag("notifications/meetara/agent_event")]
    | Annotated[ResultResponse, Tag("result")]
    | Annotated[ErrorResponse, Tag("error")],
    Discriminator(
        _message_tag,
        custom_error_type="unknown_message",
        custom_error_message="not a known message: expected a request, notification or response "
        "with a supported method",
    ),
]
"""Every message the swarm exchanges, told apart by ``method`` (or result/error)."""

RequestMessage: TypeAlias = CallToolRequest | ListToolsRequest | PingRequest
NotificationMessage: TypeAlias = ProgressNotification | JobEventNotification | AgentEventNotification
ResponseMessage: TypeAlias = ResultResponse | ErrorResponse


class BusMeta(WireModel):
    """Delivery metadata carried beside every message."""

    message_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(default_factory=new_id)
    """Unique id of this message; replies carry it as ``correlation_id``."""
    sender: Annotated[str, Field(min_length=1, max_length=200)]
    """Who sent it: ``agent_name/instance`` or a client name."""
    reply_to: StreamName | None = None
    """Logical stream where the response must go; set on requests only."""
    correlation_id: Annotated[str, Field(max_length=200)] | None = None
    """On a response: the ``message_id`` of the request it answers."""
    trace_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(default_factory=new_id)
    """Shared by every message caused by one user action, for log correlation."""
    deadline: float | None = None
    """Epoch seconds after which the sender no longer waits; receivers skip expired requests."""
    attempt: int = Field(default=1, ge=1, le=1000)
    """The sender's attempt number for this logical call (its own retries)."""
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """Requests with the same key (to the same agent) run once; later ones get the stored result."""
    protocol_version: Annotated[str, Field(max_length=50)] = PROTOCOL_VERSION
    """Envelope schema version of the sender."""
    sent_at: float = Field(default_factory=now)
    """When the message was sent (epoch seconds)."""


class Envelope(WireModel):
    """What travels in a stream entry: metadata plus one JSON-RPC message."""

    meta: BusMeta
    """Delivery metadata."""
    message: Message
    """The JSON-RPC message."""

    @property
    def is_request(self) -> bool:
        return isinstance(self.message, CallToolRequest | ListToolsRequest | PingRequest)
