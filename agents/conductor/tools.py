"""The agents' tools the Conductor calls, each with its typed input and output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from protocol import ToolModel
from protocol.agents.cost_monitor import (
    BudgetStatus,
    BudgetStatusInput,
    EstimateInput,
    EstimateOutput,
    RecordUsageInput,
    RecordUsageOutput,
)
from protocol.agents.data_generation import (
    CheckTeacherInput,
    CheckTeacherOutput,
    CombineInput,
    CombineOutput,
    GenerateInput,
    GenerateOutput,
)
from protocol.agents.gguf_creation import CreateGgufInput, CreateGgufOutput, DeployInput, DeployOutput
from protocol.agents.gpu_optimization import (
    CheckBaseInput,
    CheckBaseOutput,
    DeviceProfile,
    ProfileDeviceInput,
    TrainInput,
    TrainOutput,
)
from protocol.agents.knowledge_transfer import (
    Recommendation,
    RecommendInput,
    RegisterDomainInput,
    RegisterDomainOutput,
)
from protocol.agents.quality_assurance import ValidateModelInput, ValidateModelOutput
from runtime import SwarmClient

__all__ = [
    "BUDGET_STATUS",
    "CHECK_BASE",
    "CHECK_TEACHER",
    "COMBINE",
    "CREATE_GGUF",
    "DEPLOY",
    "ESTIMATE",
    "GENERATE",
    "PROFILE_DEVICE",
    "RECOMMEND",
    "RECORD_USAGE",
    "REGISTER",
    "TRAIN",
    "VALIDATE_MODEL",
    "AgentTool",
]

In = TypeVar("In", bound=ToolModel)
Out = TypeVar("Out", bound=ToolModel)


@dataclass(frozen=True, slots=True)
class AgentTool(Generic[In, Out]):
    """One tool of one agent."""

    agent: str
    name: str
    input: type[In]
    output: type[Out]

    async def call(self, client: SwarmClient, arguments: In, **options: Any) -> Out:
        """Call it (``options``: ``SwarmClient.call``'s); raises ``RpcError``, or ``ToolFailed`` for an error result."""
        return await client.call_model(self.agent, self.name, arguments, self.output, **options)


CHECK_TEACHER = AgentTool("data_generation", "check_teacher", CheckTeacherInput, CheckTeacherOutput)
GENERATE = AgentTool("data_generation", "generate", GenerateInput, GenerateOutput)
COMBINE = AgentTool("data_generation", "combine", CombineInput, CombineOutput)
RECOMMEND = AgentTool("knowledge_transfer", "recommend", RecommendInput, Recommendation)
REGISTER = AgentTool("knowledge_transfer", "register", RegisterDomainInput, RegisterDomainOutput)
CHECK_BASE = AgentTool("gpu_optimization", "check_base_model", CheckBaseInput, CheckBaseOutput)
PROFILE_DEVICE = AgentTool("gpu_optimization", "profile_device", ProfileDeviceInput, DeviceProfile)
TRAIN = AgentTool("gpu_optimization", "train", TrainInput, TrainOutput)
CREATE_GGUF = AgentTool("gguf_creation", "create_gguf", CreateGgufInput, CreateGgufOutput)
VALIDATE_MODEL = AgentTool("quality_assurance", "validate_model", ValidateModelInput, ValidateModelOutput)
DEPLOY = AgentTool("gguf_creation", "deploy", DeployInput, DeployOutput)
ESTIMATE = AgentTool("cost_monitor", "estimate", EstimateInput, EstimateOutput)
BUDGET_STATUS = AgentTool("cost_monitor", "budget_status", BudgetStatusInput, BudgetStatus)
RECORD_USAGE = AgentTool("cost_monitor", "record_usage", RecordUsageInput, RecordUsageOutput)
