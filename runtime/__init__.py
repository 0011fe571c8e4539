"""The agent host: Agent base class and tools, process lifecycle, liveness, settings, logging,
artifact store, catalogue, client, progress and CLI."""

from runtime._agent import Agent, AgentContext, CallContext, ProgressReporter, ToolError
from runtime._artifacts import ArtifactCorrupt, ArtifactMissing, ArtifactStore
from runtime._catalog import (
    Budgets,
    Catalog,
    CatalogError,
    Category,
    Domain,
    Provider,
    Tier,
    TrainingDefaults,
    load_catalog,
    load_config,
    read_config,
)
from runtime._client import SwarmClient, ToolFailed
from runtime._discovery import AgentNotFound, agent_names, load_agent_class
from runtime._host import AgentHost
from runtime._liveness import LivenessRegistry
from runtime._logging import configure_logging
from runtime._progress import OnProgress, follow_progress
from runtime._settings import Settings
from runtime._swarm import connect, open_swarm
from runtime._tools import ToolDef, ToolRegistry, tool
from runtime._version import VERSION

__all__ = [
    "VERSION",
    "Agent",
    "AgentContext",
    "AgentHost",
    "AgentNotFound",
    "ArtifactCorrupt",
    "ArtifactMissing",
    "ArtifactStore",
    "Budgets",
    "CallContext",
    "Catalog",
    "CatalogError",
    "Category",
    "Domain",
    "LivenessRegistry",
    "OnProgress",
    "ProgressReporter",
    "Provider",
    "Settings",
    "SwarmClient",
    "Tier",
    "ToolDef",
    "ToolError",
    "ToolFailed",
    "ToolRegistry",
    "TrainingDefaults",
    "agent_names",
    "configure_logging",
    "connect",
    "follow_progress",
    "load_agent_class",
    "load_catalog",
    "load_config",
    "open_swarm",
    "read_config",
    "tool",
]
