"""The agent host: runs agents on a bus, keeps them in the liveness registry, stops gracefully."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Literal

import anyio
import anyio.lowlevel
import structlog

from bus import Bus, MemoryTransport, Subscription
from protocol import AgentEvent, AgentEventNotification, AgentInstance, Unavailable
from runtime._agent import Agent, AgentContext
from runtime._artifacts import ArtifactStore
from runtime._catalog import load_catalog
from runtime._client import SwarmClient
from runtime._liveness import LivenessRegistry
from runtime._records import RecordStore, TransportRecords
from runtime._records_sqlite import SqliteRecords
from runtime._settings import Settings
from runtime._version import VERSION

__all__ = ["AgentHost"]

log = structlog.get_logger("runtime.host")


def _records_for(settings: Settings, bus: Bus) -> RecordStore:
    """Redis keeps a Redis swarm's records; an embedded swarm (``memory://``) keeps them in a SQLite file."""
    namespace = bus.keys.namespace
    if isinstance(bus.transport, MemoryTransport):
        return RecordStore(SqliteRecords(settings.state_file, namespace))
    return RecordStore(TransportRecords(bus.transport, namespace))


class AgentHost:
    """Hosts one or more agent classes in this process.

    ``run`` returns after ``stop()``: the agents stop taking messages, in-flight work gets
    ``shutdown_grace_s`` to finish, and whatever is left is released for other replicas.
    """

    def __init__(
        self,
        bus: Bus,
        agent_classes: Sequence[type[Agent]],
        *,
        settings: Settings,
        burst: bool = False,
    ) -> None:
        names = [cls.name for cls in agent_classes]
        if len(set(names)) != len(names):
            raise ValueError(f"agent listed twice: {names}")
        self.bus = bus
        self.settings = settings
        self.instance_id = settings.instance_id
        self.records = _records_for(settings, bus)
        ctx = AgentContext(
            settings=settings,
            bus=bus,
            client=SwarmClient(bus, timeout=settings.request_timeout_s),
            artifacts=ArtifactStore(settings.artifact_url),
            catalog=load_catalog(settings.catalog_dir),
            instance_id=self.instance_id,
            records=self.records,
        )
        self.agents = [cls(ctx) for cls in agent_classes]
        self._burst = burst
        self._registry = LivenessRegistry(bus)
        self._subscriptions: dict[str, Subscription] = {}
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._liveness = anyio.CancelScope()
        self._running = False
        self._started_at = time.time()

    def stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Return once ``run`` has finished (or immediately if it never started)."""
        if self._running:
            await self._done.wait()

    def _instance(self, agent: Agent) -> AgentInstance:
        sub = self._subscriptions.get(agent.name)
        return AgentInstance(
            name=agent.name,
            instance_id=self.instance_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            tools=agent.tools.names(),
            in_flight=len(sub.in_flight) if sub else 0,
            concurrency=agent.concurrency,
            started_at=self._started_at,
            heartbeat_at=time.time(),
            version=VERSION,
        )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._running = True
        try:
            await self.records.open()  # an unreadable state database fails here, before any agent starts
            await self._run(task_status)
        finally:
            with anyio.CancelScope(shield=True):
                await self.records.close()
            self._done.set()

    async def _run(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        for agent in self.agents:
            await agent.start()  # outside the task group: a refusal to start is its own clear error
        async with anyio.create_task_group() as tg:
            for agent in self.agents:
                sub = self.bus.subscribe(
                    agent.name,
                    agent.handle,
                    consumer=self.instance_id,
                    concurrency=agent.concurrency,
                    burst=self._burst,
                )
                self._subscriptions[agent.name] = sub
                await tg.start(sub.run)
            await self._announce_all()
            for agent in self.agents:
                await self._lifecycle_event(agent, "agent_started")
            tg.start_soon(self._liveness_loop)
            for agent in self.agents:
                tg.start_soon(agent.background)
            log.info("agents running", agents=[a.name for a in self.agents], instance=self.instance_id)
            task_status.started()
            if self._burst:
                for sub in self._subscriptions.values():
                    await sub.wait_stopped()
            else:
                await self._stop.wait()
            await self._shutdown()
            tg.cancel_scope.cancel()

    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace_s
        for agent in self.agents:
            agent.shutting_down()
        for sub in self._subscriptions.values():
            sub.stop(grace=grace)
        with anyio.CancelScope(shield=True):
            for sub in self._subscriptions.values():
                await sub.wait_stopped()
            # No refresh after the withdrawal: it would list a stopped instance until its TTL ran out.
            self._liveness.cancel()
            await anyio.lowlevel.checkpoint()
            for agent in self.agents:
                try:
                    await self._registry.withdraw(self._instance(agent))
                    await self._lifecycle_event(agent, "agent_stopped")
                except Unavailable as exc:
                    log.warning("could not deregister", agent=agent.name, error=exc.message)
                await agent.stop()
        log.info("agents stopped", agents=[a.name for a in self.agents], instance=self.instance_id)

    async def _lifecycle_event(self, agent: Agent, kind: Literal["agent_started", "agent_stopped"]) -> None:
        event = AgentEvent(kind=kind, agent=agent.name, instance_id=self.instance_id)
        await self.bus.publish_event(AgentEventNotification(params=event))

    async def _announce_all(self) -> None:
        for agent in self.agents:
            await self._registry.announce(self._instance(agent), ttl_s=self.settings.liveness_ttl_s)

    async def _liveness_loop(self) -> None:
        with self._liveness:
            while True:
                await anyio.sleep(self.settings.liveness_ttl_s / 3)
                try:
                    await self._announce_all()
                except Unavailable as exc:
                    log.warning("liveness refresh failed", error=exc.message)
