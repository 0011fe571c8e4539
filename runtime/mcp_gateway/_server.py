"""The MCP server in front of the swarm: the SDK's low-level ``Server`` with a dynamic tool list."""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ValidationError

from protocol import CallToolResult, MeetaraError, RpcError, new_id, summarize_validation_error
from runtime._client import SwarmClient
from runtime._errors import ToolError
from runtime._progress import follow_progress
from runtime._version import VERSION
from runtime.mcp_gateway._catalogue import Route, ToolCatalogue, mcp_tool
from runtime.mcp_gateway._options import GatewayOptions
from runtime.mcp_gateway._progress import rising
from runtime.mcp_gateway._resources import list_resources, read_resource, resource_templates
from runtime.mcp_gateway._swarm_tools import SWARM, SWARM_TOOLS, GatewayCall, SwarmTools

__all__ = ["Gateway", "serve_stdio"]

log = structlog.get_logger("runtime.mcp_gateway")

INSTRUCTIONS = """\
MeeTARA Lab, a factory of domain-specialist chat models run by a swarm of agents. Tools are named
{agent}_{tool}. To train a domain: conductor_list_domains, then swarm_run_job (submits and follows
the job with progress until it ends), or conductor_submit_job and later swarm_wait_job.
conductor_job_status and conductor_job_report tell how a job went; cost_monitor_cost_report what it
cost. Resources: meetara://models/manifest (deployed models) and meetara://jobs/{job_id}/report."""


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _from_swarm(result: CallToolResult) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=c.text) for c in result.content],
        structured_content=result.structured_content,
        is_error=result.is_error,
    )


def _from_model(output: BaseModel) -> types.CallToolResult:
    structured = output.model_dump(mode="json")
    text = json.dumps(structured, separators=(",", ":"))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured)


class Gateway:
    """Serves the live agents' tools, whole jobs with progress, and reports as MCP resources.

    One ``server`` serves any number of MCP sessions (stdio, or many over HTTP).
    """

    def __init__(self, client: SwarmClient, options: GatewayOptions) -> None:
        self.client = client
        self.options = options
        self.swarm_tools = SwarmTools(
            client, call_timeout_s=options.call_timeout_s, watch_interval_s=options.watch_interval_s
        )
        local = [Route(f"{SWARM}_{d.name}", SWARM, d.name, d.spec) for d in SWARM_TOOLS]
        self.catalogue = ToolCatalogue(client, options, local=local)
        self.server: Server[Any] = Server(
            "meetara",
            version=VERSION,
            title="MeeTARA Lab",
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
        )

    # -- tools ---------------------------------------------------------------------------------
    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            routes = await self.catalogue.refresh()
        except RpcError as exc:
            raise MCPError(exc.code, f"cannot list the swarm's tools: {exc.message}") from None
        return types.ListToolsResult(tools=[mcp_tool(r) for r in routes])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            route = await self.catalogue.resolve(params.name)
        except RpcError as exc:
            return _error(f"cannot reach the swarm: {exc.message}")
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}; tools/list names every tool")
        refusal = self.catalogue.refusal(route)
        if refusal is not None:
            return _error(refusal)
        arguments = params.arguments or {}
        log.info("tool call", tool=route.name)
        try:
            if route.agent == SWARM:
                return await self._call_local(ctx, route, arguments)
            return await self._call_agent(ctx, route, arguments)
        except ToolError as exc:
            return _error(f"{route.name}: {exc.message}")
        except RpcError as exc:
            # Agent down, timed out, refused the arguments…: a result the model can read, never a hang.
            return _error(f"{route.agent}.{route.tool} failed: {exc.message}")
        except MeetaraError as exc:
            return _error(str(exc))

    async def _call_agent(
        self, ctx: ServerRequestContext[Any], route: Route, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        bus = self.client.bus
        # A key of our own, so a cancelled MCP call can ask the agent to stop (Bus.cancel_request).
        key = f"mcp-{new_id()}"
        # Always relayed: an in-process client asks for progress without a token in ``_meta``,
        # and reporting is a no-op for a caller that did not ask.
        token = new_id()
        try:
            async with follow_progress(bus, token, rising(ctx.session.report_progress)):
                outcome = await self.client.call(
                    route.agent,
                    route.tool,
                    arguments,
                    timeout=self.options.call_timeout_s,
                    idempotency_key=key,
                    progress_token=token,
                )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await bus.cancel_request(route.agent, key)
            log.info("tool call cancelled by the client", tool=route.name)
            raise
        return _from_swarm(outcome)

    async def _call_local(
        self, ctx: ServerRequestContext[Any], route: Route, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        definition = SWARM_TOOLS.get(route.tool)
        assert definition is not None
        try:
            params = definition.input_model.model_validate(arguments)
        except ValidationError as exc:
            detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in summarize_validation_error(exc)[:5])
            return _error(f"invalid arguments for {route.name}: {detail}")
        method = getattr(self.swarm_tools, definition.method_name)
        if definition.wants_context:
            output = await method(params, GatewayCall(progress=ctx.session.report_progress))
        else:
            output = await method(params)
        return _from_model(output)

    # -- resources -----------------------------------------------------------------------------
    async def _list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(
            resources=await list_resources(self.client, timeout=self.options.call_timeout_s)
        )

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=resource_templates())

    async def _read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return await read_resource(self.client, params.uri, timeout=self.options.call_timeout_s)


async def serve_stdio(server: Server[Any]) -> None:
    """Serve one MCP client over this process's stdin/stdout until it closes stdin."""
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
