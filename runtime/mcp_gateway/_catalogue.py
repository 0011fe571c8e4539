"""The gateway's tool catalogue: the live agents' own typed tools, namespaced and filtered.

Built from ``tools/list`` over the bus on every MCP ``tools/list``, so a new agent tool appears
without gateway changes. Routes of agents that went away are kept: calling one then gives the
client a clear "agent down" result instead of "unknown tool".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import mcp_types as types
import structlog
from mcp.shared.tool_name_validation import TOOL_NAME_REGEX

from protocol import RpcError, ToolSpec
from runtime._client import SwarmClient
from runtime.mcp_gateway._options import GatewayOptions

__all__ = ["Route", "ToolCatalogue", "mcp_tool"]

log = structlog.get_logger("runtime.mcp_gateway")


@dataclass(frozen=True, slots=True)
class Route:
    """Where an MCP tool name leads: one tool of one agent."""

    name: str
    """The MCP tool name, ``{agent}_{tool}``."""
    agent: str
    tool: str
    spec: ToolSpec

    @property
    def destructive(self) -> bool:
        a = self.spec.annotations
        return a is not None and bool(a.destructive_hint) and not a.read_only_hint


def mcp_tool(route: Route) -> types.Tool:
    """The MCP descriptor of a route: the agent's own schemas, docstring and hints, unchanged."""
    spec, hints = route.spec, route.spec.annotations
    annotations = None
    if hints is not None:
        annotations = types.ToolAnnotations(
            title=hints.title,
            read_only_hint=hints.read_only_hint,
            destructive_hint=hints.destructive_hint,
            idempotent_hint=hints.idempotent_hint,
            open_world_hint=hints.open_world_hint,
        )
    return types.Tool(
        name=route.name,
        title=spec.title,
        description=spec.description,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
        annotations=annotations,
    )


class ToolCatalogue:
    """Routes from MCP tool names to agent tools, with the configured tools switched off."""

    def __init__(self, client: SwarmClient, options: GatewayOptions, *, local: Iterable[Route] = ()) -> None:
        self._client = client
        self._options = options
        self._local = list(local)
        self._routes: dict[str, Route] = {}
        for route in self._local:
            self._add(route)

    def _add(self, route: Route) -> Route | None:
        known = self._routes.get(route.name)
        if known is not None and (known.agent, known.tool) != (route.agent, route.tool):
            log.warning("tool name taken; tool left out", name=route.name, agent=route.agent, tool=route.tool)
            return None
        if not TOOL_NAME_REGEX.match(route.name):
            log.warning("not a valid MCP tool name; tool left out", name=route.name)
            return None
        self._routes[route.name] = route
        return route

    def refusal(self, route: Route) -> str | None:
        """Why the gateway's configuration forbids this tool, or ``None``."""
        if route.name in self._options.disabled_tools:
            return f"tool {route.name!r} is disabled in this gateway's configuration (MEETARA_MCP_DISABLED_TOOLS)"
        if route.destructive and not self._options.allow_destructive:
            return (
                f"tool {route.name!r} is destructive and destructive tools are disabled in this gateway's "
                "configuration (MEETARA_MCP_ALLOW_DESTRUCTIVE)"
            )
        return None

    async def _agent_tools(self, agent: str, found: dict[str, list[ToolSpec]]) -> None:
        try:
            found[agent] = await self._client.list_tools(agent, timeout=self._options.list_timeout_s)
        except RpcError as exc:
            log.warning("agent did not list its tools; left out", agent=agent, error=exc.message)

    async def refresh(self) -> list[Route]:
        """Ask every live agent for its tools; returns the routes a client may see now.

        Raises:
            Unavailable: the broker cannot be reached.
        """
        agents = sorted({instance.name for instance in await self._client.agents()})
        found: dict[str, list[ToolSpec]] = {}
        async with anyio.create_task_group() as tg:
            for agent in agents:
                tg.start_soon(self._agent_tools, agent, found)
        routes = list(self._local)
        for agent in agents:
            for spec in found.get(agent, []):
                route = self._add(Route(f"{agent}_{spec.name}", agent, spec.name, spec))
                if route is not None:
                    routes.append(route)
        return [r for r in routes if self.refusal(r) is None]

    async def resolve(self, name: str) -> Route | None:
        """The route of ``name``, listing the agents again if it is not known yet."""
        if name not in self._routes:
            await self.refresh()
        return self._routes.get(name)
