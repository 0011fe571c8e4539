"""Opening the bus from settings, and running a whole swarm inside this process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio

from bus import Bus, open_transport
from runtime._agent import Agent
from runtime._artifacts import ArtifactStore
from runtime._client import SwarmClient
from runtime._host import AgentHost
from runtime._settings import Settings

__all__ = ["EmbeddedSwarm", "connect", "open_swarm"]


@contextlib.asynccontextmanager
async def connect(settings: Settings, *, sender: str = "client") -> AsyncIterator[Bus]:
    """The bus named by ``settings.bus_url``; raises ``Unavailable`` if the broker is down."""
    bus = Bus(
        open_transport(settings.bus_url),
        options=settings.bus,
        client_id=f"{sender}-{settings.instance_id}",
        sender=f"{sender}/{settings.instance_id}",
    )
    async with bus:
        yield bus


@dataclass(frozen=True, slots=True)
class EmbeddedSwarm:
    """A running in-process swarm and a client to call it."""

    bus: Bus
    client: SwarmClient
    host: AgentHost
    artifacts: ArtifactStore
    """The swarm's artifact store, for putting inputs and reading results."""


@contextlib.asynccontextmanager
async def open_swarm(settings: Settings, agent_classes: Sequence[type[Agent]]) -> AsyncIterator[EmbeddedSwarm]:
    """Run ``agent_classes`` in this process on the configured bus until the block exits."""
    async with connect(settings, sender="swarm") as bus:
        host = AgentHost(bus, agent_classes, settings=settings)
        await bus.start_task(host.run)
        try:
            client = SwarmClient(bus, timeout=settings.request_timeout_s)
            yield EmbeddedSwarm(bus, client, host, ArtifactStore(settings.artifact_url))
        finally:
            host.stop()
            with anyio.CancelScope(shield=True):
                await host.wait_stopped()
