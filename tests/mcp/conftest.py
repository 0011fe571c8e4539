"""Gateway-test fixtures: an embedded swarm with an MCP client session on its gateway."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mcp import Client

from runtime import Agent, EmbeddedSwarm, Settings, open_swarm
from runtime.mcp_gateway import Gateway, GatewayOptions


@contextlib.asynccontextmanager
async def mcp_session(
    settings: Settings, agents: Sequence[type[Agent]], **options: Any
) -> AsyncIterator[tuple[EmbeddedSwarm, Client]]:
    """An embedded swarm of ``agents`` and the SDK's in-memory client on a gateway in front of it."""
    async with open_swarm(settings, agents) as swarm:
        timings = {"call_timeout_s": settings.request_timeout_s, "watch_interval_s": settings.liveness_ttl_s / 3}
        gateway = Gateway(swarm.client, GatewayOptions(**timings, **options))
        async with Client(gateway.server) as client:
            yield swarm, client
