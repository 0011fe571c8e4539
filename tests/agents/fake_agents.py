"""Stand-ins for the six agents a job goes through, for driving the Conductor's JobDriver fast.

Each takes the real tool input model (so the Conductor's arguments are validated as the real
agent would) and answers with what that step recorded in a job of a real run on the tiny model
(``fixtures/``). A ``Script`` says what to answer and records what was asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from agents.conductor.steps import CONVERT, DATA, DEPLOY, KNOWLEDGE_TRANSFER, MODEL_QA, TRAIN
from protocol import ToolModel
from protocol.agents.conductor import JobRecord
from protocol.agents.cost_monitor import (
    BudgetStatus,
    BudgetStatusInput,
    EstimateInput,
    EstimateOutput,
    RecordUsageInput,
    RecordUsageOutput,
    UsageEntry,
)
from protocol.agents.data_generation import CombineInput, CombineOutput, GenerateInput, GenerateOutput
from protocol.agents.gguf_creation import CreateGgufInput, CreateGgufOutput, DeployInput, DeployOutput
from protocol.agents.gpu_optimization import TrainInput, TrainOutput
from protocol.agents.knowledge_transfer import (
    Recommendation,
    RecommendInput,
    RegisterDomainInput,
    RegisterDomainOutput,
)
from protocol.agents.quality_assurance import ValidateModelInput, ValidateModelOutput
from runtime import Agent, CallContext, ToolError, tool

FIXTURES = Path(__file__).parent / "fixtures"
USD_PER_STEP = 0.25


def recorded_job(name: str) -> JobRecord:
    """A job record as a real run stored it (``fixtures/{name}.json``)."""
    return JobRecord.model_validate_json((FIXTURES / f"{name}.json").read_text())


@dataclass(frozen=True)
class Asked:
    tool: str
    arguments: ToolModel
    key: str | None
    """The idempotency key the call came with."""


@dataclass
class Script:
    """What the fake agents answer, and what they were asked."""

    done: JobRecord = field(default_factory=lambda: recorded_job("domain_job_done"))
    """Every tool answers with what its step recorded in this finished job."""
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    """Per tool, raised by its next calls in turn."""
    qa_passed: bool = True
    budget_stopped: bool = False
    estimate_refused: str | None = None
    """``estimate`` answers that the plan does not fit, for this reason."""
    hold_training: bool = False
    """``train`` runs until its caller cancels it or this is cleared."""
    training: anyio.Event = field(default_factory=anyio.Event)
    """Set once ``train`` runs."""
    asked: list[Asked] = field(default_factory=list)

    def ask(self, tool: str, arguments: ToolModel, ctx: CallContext | None = None) -> None:
        self.asked.append(Asked(tool, arguments, ctx.envelope.meta.idempotency_key if ctx else None))
        failures = self.failures.get(tool)
        if failures:
            raise failures.pop(0)

    def tools(self) -> list[str]:
        return [a.tool for a in self.asked]

    def arguments(self, tool: str) -> list[ToolModel]:
        return [a.arguments for a in self.asked if a.tool == tool]


class Fake(Agent):
    script = Script()


class FakeDataGeneration(Fake):
    name = "data_generation"

    @tool(idempotent=True)
    async def generate(self, params: GenerateInput, ctx: CallContext) -> GenerateOutput:
        """Data for one domain."""
        self.script.ask("generate", params, ctx)
        await ctx.progress(params.count, params.count, f"{params.domain}: filter, round 1")
        return GenerateOutput.model_validate(DATA.read(self.script.done).model_dump(include=_fields(GenerateOutput)))

    @tool(idempotent=True)
    async def combine(self, params: CombineInput, ctx: CallContext) -> CombineOutput:
        """One training set out of the domains'."""
        self.script.ask("combine", params, ctx)
        data = DATA.read(self.script.done).model_dump(include=_fields(CombineOutput))
        return CombineOutput.model_validate({**data, "samples_per_domain": {p.domain: 19 for p in params.parts}})


class FakeKnowledgeTransfer(Fake):
    name = "knowledge_transfer"

    @tool(read_only=True)
    async def recommend(self, params: RecommendInput, ctx: CallContext) -> Recommendation:
        """Nothing similar enough."""
        self.script.ask("recommend", params, ctx)
        recommendation = KNOWLEDGE_TRANSFER.read(self.script.done)
        assert isinstance(recommendation, Recommendation)
        return recommendation

    @tool(idempotent=True)
    async def register(self, params: RegisterDomainInput, ctx: CallContext) -> RegisterDomainOutput:
        """Index the domain."""
        self.script.ask("register", params, ctx)
        return RegisterDomainOutput(domain=params.domain, indexed=1)


class FakeGpuOptimization(Fake):
    name = "gpu_optimization"

    @tool(idempotent=True)
    async def train(self, params: TrainInput, ctx: CallContext) -> TrainOutput:
        """Three steps of progress from a worker thread, as the real trainer reports them."""
        self.script.ask("train", params, ctx)
        self.script.training.set()
        report = ctx.progress_reporter()

        def steps() -> None:
            for step in (1, 2, 3):
                report(step, 3, f"step {step}/3", meta={"loss": 3.0 / step})

        await anyio.to_thread.run_sync(steps)
        while self.script.hold_training:
            if await ctx.cancelled():
                raise ToolError("training stopped at step 3 (cancelled by the caller)", data={"step": 3})
            await anyio.sleep(0.02)
        return TRAIN.read(self.script.done)


class FakeGgufCreation(Fake):
    name = "gguf_creation"

    @tool(idempotent=True)
    async def create_gguf(self, params: CreateGgufInput, ctx: CallContext) -> CreateGgufOutput:
        """The models the finished job built, with a status line of progress (no count)."""
        self.script.ask("create_gguf", params, ctx)
        await ctx.progress(0, None, "merging")
        return CONVERT.read(self.script.done)

    @tool(idempotent=True, destructive=True)
    async def deploy(self, params: DeployInput, ctx: CallContext) -> DeployOutput:
        """Deployed as the finished job's first model was."""
        self.script.ask("deploy", params, ctx)
        deployed = DEPLOY.read(self.script.done).models[0]
        return DeployOutput.model_validate(deployed.model_dump(exclude={"model_id"}))


class FakeQualityAssurance(Fake):
    name = "quality_assurance"

    @tool(idempotent=True)
    async def validate_model(self, params: ValidateModelInput, ctx: CallContext) -> ValidateModelOutput:
        """The finished job's verdict, or a failing one."""
        self.script.ask("validate_model", params, ctx)
        validated = MODEL_QA.read(self.script.done).models[0]
        output = ValidateModelOutput.model_validate(validated.model_dump(exclude={"model_id"}))
        if self.script.qa_passed:
            return output
        failed = output.report.model_copy(update={"passed": False, "score": 40.0, "reasons": ["replies are gibberish"]})
        return output.model_copy(update={"report": failed})


class FakeCostMonitor(Fake):
    name = "cost_monitor"

    @tool(read_only=True)
    async def budget_status(self, params: BudgetStatusInput) -> BudgetStatus:
        """Stopped or not, as scripted."""
        return BudgetStatus(periods=[], stopped=self.script.budget_stopped, stop_threshold=1.0)

    @tool(read_only=True)
    async def estimate(self, params: EstimateInput) -> EstimateOutput:
        """A dollar an hour; refused as scripted."""
        self.script.ask("estimate", params)
        refused = self.script.estimate_refused
        return EstimateOutput(usd=params.hours, usd_per_hour=1.0, fits=refused is None, reason=refused)

    @tool(idempotent=True)
    async def record_usage(self, params: RecordUsageInput, ctx: CallContext) -> RecordUsageOutput:
        """Every step costs the same."""
        self.script.ask("record_usage", params, ctx)
        entry = UsageEntry(
            **params.model_dump(exclude={"seconds"}),
            seconds=params.seconds,
            usd_per_hour=1.0,
            usd=USD_PER_STEP,
            at=0.0,
        )
        return RecordUsageOutput(entry=entry, recorded=True, alerts=[])


FAKES: list[type[Agent]] = [
    FakeDataGeneration,
    FakeKnowledgeTransfer,
    FakeGpuOptimization,
    FakeGgufCreation,
    FakeQualityAssurance,
    FakeCostMonitor,
]


def _fields(model: type[ToolModel]) -> set[str]:
    return set(model.model_fields)
