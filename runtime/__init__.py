"""The agent host: Agent base class and tools, process lifecycle, liveness, settings, logging,
artifact store, record store, catalogue, atomic file writes, client, progress and CLI."""

from runtime._agent import Agent, AgentContext, CallContext, ProgressReporter
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
from runtime._errors import ToolError
from runtime._files import atomic_path, atomic_write, utc_now_iso, write_json
from runtime._host import AgentHost
from runtime._job_events import job_events
from runtime._lifecycle import stop_on_signal
from runtime._liveness import LivenessRegistry
from runtime._logging import configure_logging
from runtime._loss_chart import loss_svg
from runtime._progress import OnProgress, follow_progress
from runtime._records import (
    Collection,
    LeaseKind,
    Leases,
    RecordBackend,
    RecordError,
    RecordKind,
    RecordStore,
    TransportRecords,
)
from runtime._records_sqlite import SqliteRecords
from runtime._settings import Settings
from runtime._swarm import EmbeddedSwarm, connect, open_swarm
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
    "Collection",
    "Domain",
    "EmbeddedSwarm",
    "LeaseKind",
    "Leases",
    "LivenessRegistry",
    "OnProgress",
    "ProgressReporter",
    "Provider",
    "RecordBackend",
    "RecordError",
    "RecordKind",
    "RecordStore",
    "Settings",
    "SqliteRecords",
    "SwarmClient",
    "Tier",
    "ToolDef",
    "ToolError",
    "ToolFailed",
    "ToolRegistry",
    "TrainingDefaults",
    "TransportRecords",
    "agent_names",
    "atomic_path",
    "atomic_write",
    "configure_logging",
    "connect",
    "job_events",
    "follow_progress",
    "load_agent_class",
    "load_catalog",
    "load_config",
    "loss_svg",
    "open_swarm",
    "read_config",
    "stop_on_signal",
    "tool",
    "utc_now_iso",
    "write_json",
]
