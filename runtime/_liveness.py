"""The liveness registry: each agent instance refreshes a record with a TTL; expired means gone."""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from bus import Bus
from protocol import AgentInstance

__all__ = ["LivenessRegistry"]

log = structlog.get_logger("runtime.liveness")


class LivenessRegistry:
    """Reads and writes ``AgentInstance`` records through the bus's presence keys."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    @staticmethod
    def member(instance: AgentInstance) -> str:
        return f"{instance.name}.{instance.instance_id}"

    async def announce(self, instance: AgentInstance, *, ttl_s: float) -> None:
        await self._bus.put_presence(
            self.member(instance), instance.model_dump_json().encode(), ttl_ms=int(ttl_s * 1000)
        )

    async def withdraw(self, instance: AgentInstance) -> None:
        await self._bus.remove_presence(self.member(instance))

    async def instances(self, agent: str | None = None) -> list[AgentInstance]:
        """Live instances, sorted by agent name then instance id."""
        found = []
        for member, payload in (await self._bus.presence()).items():
            try:
                instance = AgentInstance.model_validate_json(payload)
            except ValidationError:
                log.warning("ignoring malformed liveness record", member=member)
                continue
            if agent is None or instance.name == agent:
                found.append(instance)
        return sorted(found, key=lambda i: (i.name, i.instance_id))
