"""Finding agent classes: installed packages declare them in the ``meetara.agents`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from protocol import MeetaraError
from runtime._agent import Agent

__all__ = ["AgentNotFound", "agent_names", "load_agent_class"]

GROUP = "meetara.agents"


class AgentNotFound(MeetaraError):
    """No installed agent has that name."""


def agent_names() -> list[str]:
    """Names of every installed agent, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_agent_class(name: str) -> type[Agent]:
    """Import the agent class registered under ``name``."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise AgentNotFound(f"no agent named {name!r}; installed agents: {', '.join(agent_names())}")
    klass = matches[0].load()
    if not (isinstance(klass, type) and issubclass(klass, Agent)) or klass.name != name:
        raise AgentNotFound(f"entry point {name!r} does not name an Agent subclass called {name!r}")
    return klass
