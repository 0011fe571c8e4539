"""Calling agents' tools over the bus, as the CLI, the MCP gateway and other agents do."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from bus import Bus
from protocol import (
    AgentInstance,
    CallToolParams,
    CallToolRequest,
    CallToolResult,
    ErrorResponse,
    ListToolsRequest,
    ListToolsResult,
    MeetaraError,
    PingRequest,
    RequestMessage,
    RequestMeta,
    ResultResponse,
    RpcError,
    ToolSpec,
    Unavailable,
)
from runtime._liveness import LivenessRegistry

__all__ = ["SwarmClient", "ToolFailed"]

T = TypeVar("T", bound=BaseModel)


class ToolFailed(MeetaraError):
    """A tool ran and reported an error (``isError``); ``result`` holds what it said."""

    def __init__(self, agent: str, tool: str, result: CallToolResult) -> None:
        text = " ".join(c.text for c in result.content) or "tool reported an error"
        super().__init__(f"{agent}.{tool}: {text}")
        self.result = result


class SwarmClient:
    """Typed calls to the swarm's agents."""

    def __init__(self, bus: Bus, *, timeout: float = 60.0) -> None:
        self.bus = bus
        self.timeout = timeout
        self.registry = LivenessRegistry(bus)

    async def agents(self, agent: str | None = None) -> list[AgentInstance]:
        """Live agent instances (optionally of one agent)."""
        return await self.registry.instances(agent)

    async def _request(
        self,
        agent: str,
        message: RequestMessage,
        *,
        timeout: float | None,
        require_live: bool,
        idempotency_key: str | None = None,
        trace_id: str | None = None,
        attempt: int = 1,
    ) -> dict[str, Any]:
        if require_live and not await self.registry.instances(agent):
            raise Unavailable(
                f"no live instance of agent {agent!r}; start it (meetara up / meetara agent {agent})",
                data={"agent": agent},
            )
        response = await self.bus.request(
            agent,
            message,
            timeout=timeout or self.timeout,
            idempotency_key=idempotency_key,
            trace_id=trace_id,
            attempt=attempt,
        )
        if isinstance(response, ErrorResponse):
            raise RpcError.from_error_data(response.error)
        assert isinstance(response, ResultResponse)
        return response.result

    async def ping(self, agent: str, *, timeout: float | None = None) -> None:
        await self._request(agent, PingRequest(), timeout=timeout, require_live=False)

    async def list_tools(self, agent: str, *, timeout: float | None = None) -> list[ToolSpec]:
        result = await self._request(agent, ListToolsRequest(), timeout=timeout, require_live=True)
        return ListToolsResult.model_validate(result).tools

    async def call(
        self,
        agent: str,
        tool: str,
        arguments: BaseModel | dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        progress_token: str | int | None = None,
        trace_id: str | None = None,
        attempt: int = 1,
        require_live: bool = True,
    ) -> CallToolResult:
        """Call a tool; protocol failures raise ``RpcError``, tool failures come back ``is_error``."""
        result = await self._request(
            agent,
            CallToolRequest(params=_call_params(tool, arguments, progress_token)),
            timeout=timeout,
            require_live=require_live,
            idempotency_key=idempotency_key,
            trace_id=trace_id,
            attempt=attempt,
        )
        return CallToolResult.model_validate(result)

    async def enqueue(
        self,
        agent: str,
        tool: str,
        arguments: BaseModel | dict[str, Any],
        *,
        idempotency_key: str,
        expires_in_s: float,
        trace_id: str | None = None,
    ) -> str:
        """Leave a tool call in ``agent``'s durable inbox without waiting: it runs once the agent takes it.

        For work nobody waits on (bookkeeping) while the agent may be away: the call runs at most
        once by its idempotency key, and is dropped unrun if no instance takes it within
        ``expires_in_s``. Returns the inbox entry id.
        """
        return await self.bus.send(
            agent,
            CallToolRequest(params=_call_params(tool, arguments, None)),
            trace_id=trace_id,
            idempotency_key=idempotency_key,
            expires_in_s=expires_in_s,
        )

    async def call_model(
        self,
        agent: str,
        tool: str,
        arguments: BaseModel | dict[str, Any] | None,
        output: type[T],
        **kwargs: Any,
    ) -> T:
        """Call a tool and validate its structured result into ``output``; raises ``ToolFailed``."""
        result = await self.call(agent, tool, arguments, **kwargs)
        if result.is_error:
            raise ToolFailed(agent, tool, result)
        return output.model_validate(result.structured_content or {})


def _call_params(
    tool: str, arguments: BaseModel | dict[str, Any] | None, progress_token: str | int | None
) -> CallToolParams:
    if isinstance(arguments, BaseModel):
        arguments = arguments.model_dump(mode="json", exclude_unset=True)
    return CallToolParams(
        name=tool,
        arguments=arguments or {},
        meta=RequestMeta(progress_token=progress_token) if progress_token is not None else None,
    )
