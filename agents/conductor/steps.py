"""The pipeline, one table entry per step: which agent tool it calls with what, and what it records.

A step's calls are built from the job record and what earlier steps recorded, read back through
their typed models (``TRAIN.read(job)``): a renamed field fails type checking, not a job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter

from agents.conductor import tools
from agents.conductor.settings import JobSettings
from agents.conductor.tools import AgentTool
from protocol import ToolModel
from protocol.agents.conductor import (
    DataGate,
    DataOutput,
    DeployedModel,
    DeployOutputs,
    DomainData,
    JobRecord,
    StepName,
    ValidatedModel,
    ValidateOutputs,
    WarmStart,
    WarmStartSkipped,
)
from protocol.agents.cost_monitor import TokenUsage
from protocol.agents.data_generation import (
    DEFAULT_CRISIS_FRACTION,
    CombineInput,
    CombineOutput,
    DatasetPart,
    GenerateInput,
    GenerateOutput,
    TeacherUsage,
)
from protocol.agents.gguf_creation import CreateGgufInput, CreateGgufOutput, DeployInput, DeployOutput
from protocol.agents.gpu_optimization import TrainInput, TrainOutput
from protocol.agents.knowledge_transfer import Recommendation, RecommendInput, RegisterDomainInput
from protocol.agents.quality_assurance import ValidateModelInput, ValidateModelOutput
from runtime import Catalog, SwarmClient

__all__ = [
    "CONVERT",
    "DATA",
    "DATA_QA",
    "DEPLOY",
    "KNOWLEDGE_TRANSFER",
    "MODEL_QA",
    "PARTS",
    "PIPELINE",
    "TRAIN",
    "Closing",
    "LocalStep",
    "Step",
    "ToolStep",
    "base_identity",
    "base_of",
    "registration",
]

In = TypeVar("In", bound=ToolModel)
Res = TypeVar("Res", bound=ToolModel)
Out = TypeVar("Out")
ClosingIn = TypeVar("ClosingIn", bound=ToolModel)
ClosingRes = TypeVar("ClosingRes", bound=ToolModel)

PARTS = "parts"
"""``StepRecord.output`` of a step whose calls run: their results so far, by part (a retry skips them)."""


def _no_verdict(output: object) -> None:
    return None


def _no_tokens(output: object) -> None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Step(Generic[Out]):
    """One pipeline step and what it records (``StepRecord.output``)."""

    name: StepName
    recorded: TypeAdapter[Out]
    verdict: Callable[[Out], str | None] = _no_verdict
    """Why a step that ran still fails the job (model QA said no), or ``None``."""

    def timeout_s(self, settings: JobSettings) -> float:
        """Per call, per attempt."""
        return settings.step_timeout_s.get(self.name, 3600.0)

    def agent_wait_s(self, settings: JobSettings) -> float:
        """How long the step waits for its agent to have a live instance; waiting spends no attempt."""
        return settings.wait_for_agent_s(self.name)

    def read(self, job: JobRecord) -> Out:
        """What the step recorded (it is done, or failed on a verdict)."""
        return self.recorded.validate_python(job.step(self.name).output)

    def result(self, job: JobRecord) -> Out | None:
        """What the step recorded, or ``None`` when it has not recorded anything (yet)."""
        output = job.step(self.name).output
        return self.read(job) if output and PARTS not in output else None

    def dump(self, output: Out) -> dict[str, Any]:
        dumped: dict[str, Any] = self.recorded.dump_python(output, mode="json")
        return dumped


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalStep(Step[Out]):
    """A step the Conductor decides itself, from what earlier steps recorded."""

    decide: Callable[[JobRecord, JobSettings, Catalog], Out]


@dataclass(frozen=True, slots=True)
class Closing(Generic[Res, ClosingIn, ClosingRes, Out]):
    """A call that finishes a step of several parts, with what they answered."""

    tool: AgentTool[ClosingIn, ClosingRes]
    arguments: Callable[[JobRecord, Mapping[str, Res]], ClosingIn | None]
    """Its arguments; ``None``: the step made one call and needs no closing."""
    record: Callable[[Mapping[str, Res], ClosingRes], Out]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolStep(Step[Out], Generic[In, Res, Out]):
    """A step of one agent tool's calls: one, or one per part (a domain's data, a model's QA)."""

    tool: AgentTool[In, Res]
    calls: Callable[[JobRecord], dict[str, In]]
    """Each call's arguments by part: ``""`` for a step of one call, else a domain or a model id."""
    record: Callable[[JobRecord, Mapping[str, Res]], Out]
    """What the step records from its calls' results (without a closing call)."""
    closing: Closing[Res, Any, Any, Out] | None = None
    skip: Callable[[JobRecord, SwarmClient], Awaitable[tuple[str, Out] | None]] | None = None
    """Why the step is not run and what it records instead, or ``None`` to run it."""
    on_training_device: bool = False
    """Whether it runs on the plan's training device (its usage is priced as that device's)."""
    tokens: Callable[[Out], TokenUsage | None] = _no_tokens
    """LLM tokens the step paid for (a teacher's), reported with its compute to the Cost Monitor."""
    failed_tokens: Callable[[Mapping[str, Any]], TokenUsage | None] = _no_tokens
    """LLM tokens a failed call paid for, from its error data."""


def _result(job: JobRecord, parts: Mapping[str, Res]) -> Res:
    """A step of one call records its result."""
    return parts[""]


def base_of(job: JobRecord) -> str | None:
    """The base the job trains on, chosen at planning (a job recorded before that choice: its own)."""
    return job.plan.base_model or job.spec.base_model


def base_identity(job: JobRecord) -> str:
    """What Knowledge Transfer keys adapters by: an adapter only transfers onto the base it was trained on."""
    return base_of(job) or "default"


# -- data: per domain, then one training set out of them ---------------------------------------
def _generate(job: JobRecord) -> dict[str, GenerateInput]:
    plan, single = job.plan, len(job.domains) == 1
    crisis = plan.crisis_fraction if plan.crisis_fraction is not None else DEFAULT_CRISIS_FRACTION
    return {
        "" if single else d: GenerateInput(
            domain=d,
            count=plan.samples,
            seed=job.spec.seed,
            crisis_fraction=crisis,
            generator=plan.generator,
            teacher=plan.teacher,
        )
        for d in job.domains
    }


def _one_domain(job: JobRecord, parts: Mapping[str, GenerateOutput]) -> DataOutput:
    return DataOutput(**dict(parts[""]))


def _combine(job: JobRecord, parts: Mapping[str, GenerateOutput]) -> CombineInput | None:
    scope = job.spec.scope
    if len(job.domains) == 1 or scope == "domain":  # (a domain job has one domain; this narrows the type)
        return None
    splits = [DatasetPart(domain=d, dataset=parts[d].dataset, eval_dataset=parts[d].eval_dataset) for d in job.domains]
    return CombineInput(scope=scope, target=job.spec.target, parts=splits)


def _combined(parts: Mapping[str, GenerateOutput], combined: CombineOutput) -> DataOutput:
    generated = sum(p.generated for p in parts.values())
    kept = sum(p.kept for p in parts.values())
    rejections: Counter[str] = Counter()
    for p in parts.values():
        rejections.update(p.rejections)
    usages = [p.teacher_usage for p in parts.values() if p.teacher_usage is not None]
    return DataOutput(
        **dict(combined),
        generated=generated,
        kept=kept,
        pass_rate=kept / generated if generated else 0.0,
        near_duplicate_rate=rejections["near_duplicate"] / generated if generated else 0.0,
        rejections=dict(rejections),
        rounds=max(p.rounds for p in parts.values()),
        reached_target=all(p.reached_target for p in parts.values()),
        teacher_usage=sum(usages[1:], usages[0]) if usages else None,
        domains={
            d: DomainData(kept=p.kept, pass_rate=p.pass_rate, reached_target=p.reached_target, path=p.path)
            for d, p in parts.items()
        },
    )


# Annotated in full, so that its parts are checked against each other: ``ToolStep.closing`` leaves
# the closing call's own types open.
_COMBINE: Closing[GenerateOutput, CombineInput, CombineOutput, DataOutput] = Closing(tools.COMBINE, _combine, _combined)


# -- data_qa: the Conductor's gate ---------------------------------------------------------------
def _data_gate(job: JobRecord, settings: JobSettings, catalog: Catalog) -> DataGate:
    """Enough conversations, kept at a sane rate, with crisis conversations where the domain needs them."""
    data = DATA.read(job)
    reasons = []
    short = [d for d, part in data.domains.items() if not part.reached_target]
    if short:
        reasons.append(f"fewer than {job.plan.samples} conversations passed QA for {', '.join(short)}")
    elif not data.reached_target:
        reasons.append(f"only {data.kept} of {job.plan.samples} conversations passed QA")
    if data.pass_rate < settings.min_data_pass_rate:
        reasons.append(f"QA pass rate {data.pass_rate:.2f} is below {settings.min_data_pass_rate:.2f}")
    if any(catalog.domain(d).crisis_safety for d in job.domains) and data.stats.crisis == 0:
        reasons.append("a crisis-sensitive domain's data has no crisis conversations")
    return DataGate(
        passed=not reasons,
        pass_rate=data.pass_rate,
        samples=data.stats.samples,
        eval_samples=data.eval_samples,
        near_duplicate_rate=data.near_duplicate_rate,
        reasons=reasons,
    )


def _gate_verdict(gate: DataGate) -> str | None:
    return None if gate.passed else "data QA did not pass: " + "; ".join(gate.reasons)


# -- knowledge_transfer: a trained domain to warm-start from ---------------------------------------
async def _no_warm_start(job: JobRecord, client: SwarmClient) -> tuple[str, WarmStartSkipped] | None:
    if job.spec.scope != "domain":
        why = "warm starts are for domain jobs"
    elif not job.spec.warm_start:
        why = "warm start not requested"
    elif not await client.agents(tools.RECOMMEND.agent):
        why = "no knowledge_transfer agent running"
    else:
        return None
    return why, WarmStartSkipped(skipped=why)


def _recommend(job: JobRecord) -> dict[str, RecommendInput]:
    dataset = DATA.read(job).dataset
    return {"": RecommendInput(domain=job.domains[0], base_model=base_identity(job), dataset=dataset)}


def _warm_start_from(job: JobRecord) -> WarmStart | None:
    return KNOWLEDGE_TRANSFER.read(job) if job.spec.warm_start else None


# -- train, convert ------------------------------------------------------------------------------
def _train(job: JobRecord) -> dict[str, TrainInput]:
    spec, data, warm = job.spec, DATA.read(job), _warm_start_from(job)
    arguments = TrainInput(
        scope=spec.scope,
        target=spec.target,
        dataset=data.dataset,
        eval_dataset=data.eval_dataset,
        base_model=base_of(job),
        tier=spec.tier,
        lora=spec.lora,
        training=job.plan.training,
        warm_start=warm.adapter if warm else None,
    )
    return {"": arguments}


def _convert(job: JobRecord) -> dict[str, CreateGgufInput]:
    spec, trained, stats = job.spec, TRAIN.read(job), DATA.read(job).stats
    arguments = CreateGgufInput(
        scope=spec.scope,
        target=spec.target,
        adapter=trained.adapter,
        base_model=base_of(job),
        data_stats=stats.model_dump(mode="json"),
        # A category's data speaks in each domain's role: no one prompt is the one it was trained under.
        system_prompt=stats.main_system_prompt if spec.scope == "domain" else None,
        training=trained.metrics,
    )
    return {"": arguments}


# -- model_qa, deploy: per built model -----------------------------------------------------------
def _validate(job: JobRecord) -> dict[str, ValidateModelInput]:
    eval_dataset, base = DATA.read(job).eval_dataset, base_of(job)
    return {
        m.model_id: ValidateModelInput(metadata=m.metadata, eval_dataset=eval_dataset, base_model=base)
        for m in CONVERT.read(job).models
    }


def _validated(job: JobRecord, parts: Mapping[str, ValidateModelOutput]) -> ValidateOutputs:
    return ValidateOutputs(models=[ValidatedModel(model_id=m, **dict(out)) for m, out in parts.items()])


def _qa_verdict(qa: ValidateOutputs) -> str | None:
    failed = [
        f"{m.model_id} scored {m.report.score:.1f}%: " + "; ".join(m.report.reasons[:6])
        for m in qa.models
        if not m.report.passed
    ]
    return "model QA did not pass: " + " | ".join(failed) if failed else None


def _deploy(job: JobRecord) -> dict[str, DeployInput]:
    reports = {m.model_id: m.report_artifact for m in MODEL_QA.read(job).models}
    lane = job.spec.deploy_lane
    return {
        m.model_id: DeployInput(
            job_id=job.job_id,
            metadata=m.metadata,
            qa_report=reports[m.model_id],
            lane=lane,
            allow_regression=job.spec.allow_regression,
        )
        for m in CONVERT.read(job).models
    }


def _deployed(job: JobRecord, parts: Mapping[str, DeployOutput]) -> DeployOutputs:
    return DeployOutputs(models=[DeployedModel(model_id=m, **dict(out)) for m, out in parts.items()])


# -- the table -----------------------------------------------------------------------------------
def _teacher_tokens(data: DataOutput) -> TokenUsage | None:
    return _tokens(data.teacher_usage)


def _failed_teacher_tokens(error: Mapping[str, Any]) -> TokenUsage | None:
    """What ``generate`` paid the teacher before it failed (its error data carries ``teacher_usage``)."""
    if "teacher_usage" not in error:
        return None
    return _tokens(TeacherUsage.model_validate(error["teacher_usage"]))


def _tokens(usage: TeacherUsage | None) -> TokenUsage | None:
    if usage is None or not usage.requests:
        return None
    return TokenUsage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, usd=usage.usd)


DATA: ToolStep[GenerateInput, GenerateOutput, DataOutput] = ToolStep(
    name="data",
    recorded=TypeAdapter(DataOutput),
    tool=tools.GENERATE,
    calls=_generate,
    record=_one_domain,
    closing=_COMBINE,
    tokens=_teacher_tokens,
    failed_tokens=_failed_teacher_tokens,
)
DATA_QA: LocalStep[DataGate] = LocalStep(
    name="data_qa", recorded=TypeAdapter(DataGate), decide=_data_gate, verdict=_gate_verdict
)
KNOWLEDGE_TRANSFER: ToolStep[RecommendInput, Recommendation, WarmStart] = ToolStep(
    name="knowledge_transfer",
    recorded=TypeAdapter[WarmStart](WarmStart),
    tool=tools.RECOMMEND,
    calls=_recommend,
    record=_result,
    skip=_no_warm_start,
)
TRAIN: ToolStep[TrainInput, TrainOutput, TrainOutput] = ToolStep(
    name="train",
    recorded=TypeAdapter(TrainOutput),
    tool=tools.TRAIN,
    calls=_train,
    record=_result,
    on_training_device=True,
)
CONVERT: ToolStep[CreateGgufInput, CreateGgufOutput, CreateGgufOutput] = ToolStep(
    name="convert", recorded=TypeAdapter(CreateGgufOutput), tool=tools.CREATE_GGUF, calls=_convert, record=_result
)
MODEL_QA: ToolStep[ValidateModelInput, ValidateModelOutput, ValidateOutputs] = ToolStep(
    name="model_qa",
    recorded=TypeAdapter(ValidateOutputs),
    tool=tools.VALIDATE_MODEL,
    calls=_validate,
    record=_validated,
    verdict=_qa_verdict,
)
DEPLOY: ToolStep[DeployInput, DeployOutput, DeployOutputs] = ToolStep(
    name="deploy", recorded=TypeAdapter(DeployOutputs), tool=tools.DEPLOY, calls=_deploy, record=_deployed
)

PIPELINE: tuple[Step[Any], ...] = (DATA, DATA_QA, KNOWLEDGE_TRANSFER, TRAIN, CONVERT, MODEL_QA, DEPLOY)
"""Every step, in ``STEPS`` order."""


def registration(job: JobRecord) -> RegisterDomainInput:
    """After a domain job is done: its adapter, data and loss curve, indexed for later warm starts."""
    trained, warm = TRAIN.read(job), _warm_start_from(job)
    metrics = trained.metrics
    return RegisterDomainInput(
        domain=job.domains[0],
        base_model=base_identity(job),
        adapter=trained.adapter,
        dataset=DATA.read(job).dataset,
        job_id=job.job_id,
        final_loss=metrics.final_loss,
        eval_loss=metrics.eval_loss,
        steps=metrics.steps,
        loss_curve=metrics.loss_curve,
        warm_started_from=warm.domain if warm else None,
    )
