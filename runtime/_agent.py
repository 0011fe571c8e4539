"""The ``Agent`` base class, the context its tools receive, and message dispatch."""

from __future__ import annotations

import errno
import json
import re
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import anyio.from_thread
import anyio.lowlevel
import structlog
from pydantic import ValidationError

from bus import Bus, Delivery
from protocol import (
    CallToolRequest,
    CallToolResult,
    Envelope,
    InvalidParams,
    JobEvent,
    JobEventNotification,
    ListToolsRequest,
    ListToolsResult,
    PingRequest,
    ProgressNotification,
    ProgressParams,
    ResponseMessage,
    ResultResponse,
    TextContent,
    summarize_validation_error,
)
from runtime._errors import ToolError
from runtime._settings import Settings
from runtime._tools import ToolRegistry

if TYPE_CHECKING:
    from runtime._artifacts import ArtifactStore
    from runtime._catalog import Catalog
    from runtime._client import SwarmClient
    from runtime._records import RecordStore

__all__ = ["Agent", "AgentContext", "CallContext", "ProgressReporter"]

_AGENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class AgentContext:
    """What an agent instance is given by its host."""

    settings: Settings
    bus: Bus
    client: SwarmClient
    artifacts: ArtifactStore
    catalog: Catalog
    instance_id: str
    records: RecordStore
    """Typed records shared by the swarm (jobs, ledger, index): Redis on a Redis bus, else a SQLite file."""


class ProgressReporter(Protocol):
    """A thread's way to publish its call's progress (``CallContext.progress_reporter``)."""

    def __call__(
        self,
        progress: float,
        total: float | None = None,
        message: str | None = None,
        *,
        meta: dict[str, Any] | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class CallContext:
    """Per-call context a tool can ask for as its second parameter."""

    agent: Agent
    envelope: Envelope
    delivery: Delivery

    @property
    def trace_id(self) -> str:
        return self.envelope.meta.trace_id

    @property
    def deadline(self) -> float | None:
        return self.envelope.meta.deadline

    def _progress_token(self) -> str | int:
        message = self.envelope.message
        if isinstance(message, CallToolRequest) and message.params.meta is not None:
            token = message.params.meta.progress_token
            if token is not None:
                return token
        return self.envelope.meta.message_id

    async def cancelled(self) -> bool:
        """Whether the caller asked to cancel this request (``Bus.cancel_request``)."""
        meta = self.envelope.meta
        return await self.agent.ctx.bus.cancel_requested(self.agent.name, meta.idempotency_key or meta.message_id)

    async def progress(
        self,
        progress: float,
        total: float | None = None,
        message: str | None = None,
        *,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Publish MCP-style progress for this call on the events stream (``meta``: measurements)."""
        params = ProgressParams(
            progress_token=self._progress_token(), progress=progress, total=total, message=message, meta=meta
        )
        await self.agent.ctx.bus.publish_event(ProgressNotification(params=params), trace_id=self.trace_id)

    def progress_reporter(self) -> ProgressReporter:
        """``progress`` for work in another thread (``anyio.to_thread.run_sync``'s, or one it starts).

        Ask for it in the tool, on the event loop; each report waits there until it is published.
        """
        token = anyio.lowlevel.current_token()

        def report(
            progress: float,
            total: float | None = None,
            message: str | None = None,
            *,
            meta: dict[str, Any] | None = None,
        ) -> None:
            anyio.from_thread.run(partial(self.progress, progress, total, message, meta=meta), token=token)

        return report

    async def job_event(self, event: JobEvent) -> None:
        """Publish a job event on the events stream."""
        await self.agent.ctx.bus.publish_event(JobEventNotification(params=event), trace_id=self.trace_id)


class Agent:
    """Base class of the seven agents: declare tools with ``@tool`` on async methods.

    Subclasses set ``name`` (and optionally ``description`` and ``concurrency``). Long
    synchronous work inside a tool must run in a worker thread (``anyio.to_thread``) so the
    consumer's heartbeats keep flowing.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    concurrency: ClassVar[int] = 4
    tools: ClassVar[ToolRegistry]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return  # an abstract intermediate class
        if not _AGENT_NAME.match(name):
            raise TypeError(f"agent name {name!r} must be lower snake case")
        cls.tools = ToolRegistry.from_class(cls, CallContext)

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.log = structlog.get_logger(f"agent.{self.name}").bind(instance=ctx.instance_id)

    async def start(self) -> None:
        """Called once before the agent takes messages (open models, caches…)."""

    def shutting_down(self) -> None:
        """Called when the host begins to stop, before in-flight calls get their grace period.

        Long work that can checkpoint (training) should wind down here rather than hold the
        shutdown until it ends.
        """

    async def stop(self) -> None:
        """Called once after the agent stopped taking messages."""

    async def background(self) -> None:
        """Work besides answering messages (the Conductor drives jobs here); cancelled at shutdown."""

    async def handle(self, envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
        """Answer one message; the bus turns ``RpcError`` into error responses."""
        message = envelope.message
        if isinstance(message, PingRequest):
            return ResultResponse(id=message.id, result={})
        if isinstance(message, ListToolsRequest):
            listing = ListToolsResult(tools=self.tools.specs())
            return ResultResponse(id=message.id, result=listing.model_dump(mode="json", exclude_none=True))
        if isinstance(message, CallToolRequest):
            result = await self._call_tool(message, envelope, delivery)
            return ResultResponse(id=message.id, result=result.model_dump(mode="json", exclude_none=True))
        self.log.debug("ignoring message", method=getattr(message, "method", type(message).__name__))
        return None

    async def _call_tool(self, request: CallToolRequest, envelope: Envelope, delivery: Delivery) -> CallToolResult:
        name = request.params.name
        definition = self.tools.get(name)
        if definition is None:
            raise InvalidParams(
                f"agent {self.name!r} has no tool {name!r}",
                data={"available": self.tools.names()},
            )
        try:
            params = definition.input_model.model_validate(request.params.arguments)
        except ValidationError as exc:
            errors = summarize_validation_error(exc)
            detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
            raise InvalidParams(
                f"invalid arguments for {self.name}.{name}: {detail}", data={"errors": errors}
            ) from None
        method = getattr(self, definition.method_name)
        log = self.log.bind(tool=name, trace_id=envelope.meta.trace_id, deliveries=delivery.deliveries)
        log.info("tool call")
        try:
            if definition.wants_context:
                output = await method(params, CallContext(self, envelope, delivery))
            else:
                output = await method(params)
        except Exception as exc:
            # A task group inside the tool wraps what it raised: judge the one exception inside.
            cause = _only_exception(exc)
            if isinstance(cause, ToolError):
                log.info("tool reported an error", error=cause.message)
                return _tool_error(cause.message, cause.data)
            if isinstance(cause, OSError) and cause.errno in _STORAGE_ERRNOS:
                # A full, read-only or forbidden disk does not heal by redelivery: the caller gets the reason.
                where = f" {cause.filename}" if cause.filename else ""
                what = "access to" if cause.errno in (errno.EACCES, errno.EPERM) else "a write"
                message = f"storage refused {what}{where}: {cause.strerror}"
                log.error("storage refused", error=message)
                return _tool_error(message, {"errno": errno.errorcode.get(cause.errno or 0, "")})
            raise
        if not isinstance(output, definition.output_model):
            raise TypeError(
                f"{self.name}.{name} returned {type(output).__name__}, not {definition.output_model.__name__}"
            )
        structured = output.model_dump(mode="json")
        return CallToolResult(
            content=[TextContent(text=json.dumps(structured, separators=(",", ":")))],
            structured_content=structured,
        )


_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
"""Failures of the machine's storage, not of the call: full, over quota or size limit, read-only, forbidden."""


def _only_exception(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-member exception groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _tool_error(message: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(text=message)], structured_content={"error": message, **data}, is_error=True
    )
