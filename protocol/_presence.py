"""What each running agent instance announces in the liveness registry."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from protocol._base import Name, WireModel

__all__ = ["AgentInstance"]


class AgentInstance(WireModel):
    """One live agent process (or one agent of an embedded process)."""

    name: Name
    """Agent name (``conductor``, ``gpu_optimization``…)."""
    instance_id: Annotated[str, Field(min_length=1, max_length=200)]
    """Unique per process; also its consumer name in the agent's consumer group."""
    host: str
    """Host name of the machine or container."""
    pid: int
    """Operating-system process id."""
    tools: list[Name]
    """Names of the tools it serves."""
    in_flight: int = Field(ge=0)
    """Messages it is working on right now."""
    concurrency: int = Field(ge=1)
    """Most messages it works on at once."""
    started_at: float
    """When it started (epoch seconds)."""
    heartbeat_at: float
    """When it last refreshed this record (epoch seconds)."""
    version: str
    """Package version it runs."""
