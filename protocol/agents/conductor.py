"""Tool models of the Conductor agent."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from pydantic import Field, model_validator

from protocol._base import CatalogName, ToolModel
from protocol.agents.data_generation import GenerateOutput, GeneratorName, TeacherSettings
from protocol.agents.gguf_creation import DeployOutput
from protocol.agents.gpu_optimization import LoraSettings, Scope, TrainingOverrides
from protocol.agents.knowledge_transfer import Recommendation
from protocol.agents.quality_assurance import ValidateModelOutput

__all__ = [
    "STEPS",
    "TERMINAL_STATES",
    "BatchGroup",
    "BatchIdInput",
    "BatchJob",
    "BatchRecord",
    "BatchStatus",
    "DataGate",
    "DataOutput",
    "DeployedModel",
    "DeployOutputs",
    "DescribeDomainInput",
    "DomainData",
    "DomainInfo",
    "JobIdInput",
    "JobOptions",
    "JobPlan",
    "JobRecord",
    "JobReport",
    "JobScope",
    "JobSpec",
    "JobState",
    "JobSummary",
    "ListDomainsInput",
    "ListDomainsOutput",
    "ListJobsInput",
    "ListJobsOutput",
    "ModelReport",
    "ReportFile",
    "StageReport",
    "StepName",
    "StepRecord",
    "StepStatus",
    "SubmitBatchInput",
    "SubmitBatchOutput",
    "SubmitJobOutput",
    "ValidatedModel",
    "ValidateOutputs",
    "WarmStart",
    "WarmStartSkipped",
]


class ListDomainsInput(ToolModel):
    """Arguments of ``conductor.list_domains``."""

    category: CatalogName | None = None
    """Only domains of this category; all 62 when absent."""


class DomainInfo(ToolModel):
    """One domain of the catalogue."""

    name: str
    """Domain name, as used in jobs and file names."""
    category: str
    """The category it belongs to."""
    description: str
    """What conversations in this domain are about."""
    scope: str
    """The subjects it covers."""
    quality_target: float
    """Minimum model-QA score (percent) for deployment."""
    crisis_safety: bool
    """Whether data and models must handle crisis messages by pointing to real help."""


class ListDomainsOutput(ToolModel):
    """Result of ``conductor.list_domains``."""

    domains: list[DomainInfo]
    """Matching domains, grouped by category in catalogue order."""
    categories: list[str]
    """Every category name."""


class DescribeDomainInput(ToolModel):
    """Arguments of ``conductor.describe_domain``."""

    name: CatalogName
    """Domain name; unknown names get an error with close matches."""


JobScope: TypeAlias = Scope
"""What a job's model covers: one domain (D), one category (C) or all 62 domains (A + B)."""

JobState: TypeAlias = Literal[
    "planned",
    "data",
    "data_qa",
    "knowledge_transfer",
    "train",
    "convert",
    "model_qa",
    "deploy",
    "done",
    "failed",
    "cancelled",
    "paused_budget",
]
"""Where a job is: a pipeline step while it runs, then one of the terminal states."""

StepName: TypeAlias = Literal["data", "data_qa", "knowledge_transfer", "train", "convert", "model_qa", "deploy"]
"""The pipeline steps in order; each is one idempotent tool call (``data_qa`` is the Conductor's own gate)."""

STEPS: tuple[StepName, ...] = ("data", "data_qa", "knowledge_transfer", "train", "convert", "model_qa", "deploy")
TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})
"""States a job never leaves by itself (``paused_budget`` waits for ``resume_job``)."""

StepStatus: TypeAlias = Literal["pending", "running", "done", "failed"]


class JobOptions(ToolModel):
    """How to train: everything of a job but what it trains (shared by a batch's jobs)."""

    tier: CatalogName = "lightning"
    """Training tier (``configs/tiers.yaml``)."""
    base_model: str | None = Field(default=None, max_length=1024)
    """A ``.gguf`` file, a model folder or a hub id; ``None``: the pip-shipped SmolLM2-135M-Instruct."""
    samples: int | None = Field(default=None, ge=10, le=200_000)
    """Training conversations per domain; ``None``: the tier's (or the CPU default on a CPU)."""
    seed: int = Field(default=0, ge=0)
    """Data generation and training seed."""
    lora: LoraSettings = Field(default_factory=LoraSettings)
    """LoRA hyper-parameters."""
    training: TrainingOverrides = Field(default_factory=TrainingOverrides)
    """Changes to the planned training parameters."""
    deploy_lane: Literal["production", "development"] = "production"
    """Lane the validated model is deployed to."""
    allow_regression: bool = False
    """Deploy to production even if the new version is worse than the current production version on
    the same evaluation set (the regression gate refuses it otherwise)."""
    warm_start: bool = True
    """Start training from the most similar trained domain's adapter when Knowledge Transfer finds one."""
    generator: GeneratorName | None = None
    """Who writes the training conversations: ``compositional`` (offline, from configs) or ``teacher`` (an
    LLM); ``None``: the configured default (``data.generator`` in ``configs/jobs.yaml``)."""
    teacher: TeacherSettings | None = None
    """The teacher LLM (``base_url`` and ``model`` of an OpenAI-compatible endpoint, or ``gguf_path``); the
    fields given here override ``data.teacher`` in ``configs/jobs.yaml``."""


class JobSpec(JobOptions):
    """What to train; the arguments of ``conductor.submit_job``."""

    scope: JobScope = "domain"
    """One domain, one category or the universal model."""
    target: CatalogName
    """Domain or category name; ``universal`` for the universal scope."""


class SubmitJobOutput(ToolModel):
    """Result of ``conductor.submit_job`` (and of each job of ``submit_batch``)."""

    job_id: str
    """Identifier for ``job_status``, ``cancel_job``, ``job_report``."""
    state: JobState
    """State right after submission (``planned``)."""
    domains: list[str]
    """Domains whose data the model trains on."""
    estimated_usd: float
    """The Cost Monitor's estimate for the job."""


class SubmitBatchOutput(ToolModel):
    """Result of ``conductor.submit_batch``."""

    batch_id: str
    """Identifier for ``batch_status``, ``cancel_batch``, ``resume_batch``."""
    jobs: list[SubmitJobOutput]
    estimated_usd: float
    """The Cost Monitor's estimate for the whole batch."""


class StepRecord(ToolModel):
    """One pipeline step of a job."""

    name: StepName
    status: StepStatus = "pending"
    attempts: int = 0
    """Tool calls made for it so far (retries included)."""
    attempt_base: int = 0
    """``attempts`` when the job was last resumed; retries count from here."""
    agent: str | None = None
    """Agent that ran it."""
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    """Wall time of the successful attempt."""
    usd: float = 0.0
    """What the Cost Monitor priced its compute at."""
    usd_pending: bool = False
    """Its usage waits in the Cost Monitor's inbox (the agent was away): ``usd`` is not known yet;
    the ledger (``cost_monitor.cost_report``) prices it once the agent is back."""
    output: dict[str, Any] = Field(default_factory=dict)
    """The tool's structured result, recorded before the next step starts."""
    error: str | None = None
    """Last failure, when any."""
    waiting_for: str | None = None
    """The agent the step waits for while no instance of it is live (restarting, upgraded, drained)."""


class DomainData(ToolModel):
    """One domain's generation, within the data of a job over several domains."""

    kept: int
    pass_rate: float
    reached_target: bool
    path: str


class DataOutput(GenerateOutput):
    """What the ``data`` step records: its one domain's ``generate`` result, or over several domains
    the ``combine``d splits with the domains' generation summed up."""

    samples_per_domain: dict[str, int] | None = None
    """Training samples each domain contributed (several domains)."""
    domains: dict[str, DomainData] = Field(default_factory=dict)
    """Each domain's generation (several domains)."""


class DataGate(ToolModel):
    """What the ``data_qa`` step records: the Conductor's own verdict on the data."""

    passed: bool
    pass_rate: float
    samples: int
    eval_samples: int
    near_duplicate_rate: float
    reasons: list[str]
    """Why the data fails the gate (empty when it passed)."""


class WarmStartSkipped(ToolModel):
    """What the ``knowledge_transfer`` step records when the Conductor skips it: no recommendation."""

    domain: None = None
    adapter: None = None
    skipped: str
    """Why it was skipped."""


WarmStart: TypeAlias = Recommendation | WarmStartSkipped
"""What the ``knowledge_transfer`` step records."""


class ValidatedModel(ValidateModelOutput):
    """One built model's QA result."""

    model_id: str


class ValidateOutputs(ToolModel):
    """What the ``model_qa`` step records: one QA result per built model."""

    models: list[ValidatedModel]


class DeployedModel(DeployOutput):
    """One built model's deployment."""

    model_id: str


class DeployOutputs(ToolModel):
    """What the ``deploy`` step records: one deployment per built model."""

    models: list[DeployedModel]


class JobPlan(ToolModel):
    """How the Conductor sized a job, decided once in ``planned`` and kept for resumes."""

    samples: int
    """Training conversations generated per domain."""
    crisis_fraction: float | None = None
    """Share of crisis conversations asked of Data Generation; ``None``: its default."""
    generator: GeneratorName = "compositional"
    """Who writes the training conversations (the job's choice, else the configured default)."""
    teacher: TeacherSettings | None = None
    """The teacher LLM's settings as the data step sends them (teacher generator only)."""
    training: TrainingOverrides
    """What the train step is asked for (the tier's, or the CPU-sized default on a CPU)."""
    base_model: str | None = None
    """The base every step uses: the job's own, else its tier's where a GPU host has it;
    ``None``: the pip-shipped SmolLM2-135M-Instruct."""
    device: str
    """Where training runs (the GPU Optimization agent's device)."""
    provider: str
    """Price-table provider of that device, ``local`` for own machines."""
    gpu: str | None
    """Price-table GPU type when rented."""
    estimated_hours: float
    """Training hours the estimate assumes."""
    estimated_usd: float
    reasons: list[str]
    """Why the plan looks the way it does."""


class JobRecord(ToolModel):
    """A job as persisted by the Conductor: its spec, state and every step's record."""

    job_id: str
    spec: JobSpec
    domains: list[str]
    plan: JobPlan
    state: JobState
    steps: list[StepRecord]
    created_at: float
    updated_at: float
    finished_at: float | None = None
    error: str | None = None
    """Why the job failed, was cancelled or paused."""
    batch_id: str | None = None
    """The batch it belongs to (``submit_batch``), if any."""

    def step(self, name: StepName) -> StepRecord:
        return next(s for s in self.steps if s.name == name)


class SubmitBatchInput(ToolModel):
    """Arguments of ``conductor.submit_batch``: one domain job per domain, all trained the same way."""

    domains: list[CatalogName] = Field(default_factory=list, max_length=1000)
    """These domains."""
    category: CatalogName | None = None
    """Every domain of this category."""
    all_domains: bool = False
    """Every domain of the catalogue."""
    job: JobOptions = Field(default_factory=JobOptions)
    """How each domain is trained (tier, base model, samples…)."""

    @model_validator(mode="after")
    def _one_selection(self) -> SubmitBatchInput:
        chosen = [bool(self.domains), self.category is not None, self.all_domains]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of domains, category or all_domains")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError("a domain is listed twice")
        return self


class BatchRecord(ToolModel):
    """A batch as the Conductor stores it: the jobs it made and what they were estimated to cost."""

    batch_id: str
    spec: SubmitBatchInput
    job_ids: list[str]
    """One job per domain, in the order of ``domains``."""
    domains: list[str]
    created_at: float
    estimated_usd: float


class BatchIdInput(ToolModel):
    """Arguments of the tools that take one batch."""

    batch_id: str = Field(min_length=8, max_length=64, pattern=r"^[0-9a-f]{8,64}$")
    """Batch id from ``submit_batch``."""


BatchGroup: TypeAlias = Literal["queued", "running", "paused", "done", "failed", "cancelled"]
"""Where a batch's job is: ``queued`` (planned, waiting for a slot of its batch), ``running`` (in a
step), ``paused`` (for budget), or how it ended."""


class BatchJob(ToolModel):
    """One job of a batch, as ``batch_status`` shows it."""

    job_id: str
    domain: str
    state: JobState
    group: BatchGroup
    estimated_usd: float
    spent_usd: float
    """What its finished steps cost so far."""
    error: str | None = None


class BatchStatus(ToolModel):
    """Result of the batch tools: where each job of the batch is and what the batch cost so far."""

    batch_id: str
    created_at: float
    counts: dict[str, int]
    """Jobs per group: queued, running, done, failed, cancelled, paused."""
    estimated_usd: float
    spent_usd: float
    remaining_hours: float
    """Estimated training hours of the jobs not yet done (hours measured per step on this device by
    earlier jobs; 0 where nothing was measured yet)."""
    jobs: list[BatchJob]
    skipped: list[str] = Field(default_factory=list)
    """What the tool left alone and why (a cancel of jobs that already ended, a resume of running ones)."""


class JobIdInput(ToolModel):
    """Arguments of the tools that take one job."""

    job_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]{8,64}$")
    """Job id from ``submit_job``."""


class ListJobsInput(ToolModel):
    """Arguments of ``conductor.list_jobs``."""

    state: JobState | None = None
    """Only jobs in this state."""
    target: CatalogName | None = None
    """Only jobs for this domain or category."""
    batch_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{8,64}$")
    """Only jobs of this batch."""
    limit: int = Field(default=50, ge=1, le=1000)
    """Newest first, at most this many."""


class JobSummary(ToolModel):
    """One line of ``list_jobs``."""

    job_id: str
    scope: JobScope
    target: str
    state: JobState
    created_at: float
    updated_at: float
    error: str | None = None
    batch_id: str | None = None


class ListJobsOutput(ToolModel):
    """Result of ``conductor.list_jobs``."""

    jobs: list[JobSummary]


class ReportFile(ToolModel):
    """A deployed or produced file."""

    path: str
    kind: str
    size: int
    sha256: str


class StageReport(ToolModel):
    """Time and money of one step."""

    step: StepName
    seconds: float | None
    usd: float
    attempts: int
    usd_pending: bool = False
    """Not priced yet: the usage waits for the Cost Monitor (see ``cost_monitor.cost_report``)."""


class ModelReport(ToolModel):
    """One model a job produced (a universal job produces two: full and lite)."""

    model_id: str
    files: list[ReportFile]
    """Deployed files or, before deploy, the produced ones (paths as the agents see them)."""
    metadata_path: str | None
    qa_report_path: str | None
    perplexity_base: float | None
    perplexity_adapted: float | None
    perplexity_merged: float | None
    qa_score: float | None
    qa_passed: bool | None
    deployed_version: str | None


class JobReport(ToolModel):
    """Result of ``conductor.job_report``: what a job produced, how good it is, what it took."""

    job_id: str
    state: JobState
    spec: JobSpec
    domains: list[str]
    error: str | None
    models: list[ModelReport]
    """Each model built, with its files, quality and deployed version."""
    data_pass_rate: float | None
    samples: int | None
    """Training conversations (over all the job's domains)."""
    stages: list[StageReport]
    total_seconds: float | None
    total_usd: float
    warm_started_from: str | None
    """Domain whose adapter initialised training (knowledge transfer), when any."""
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)
    """(step, training loss) of the run, at most 200 points (empty before training)."""
    report_path: str | None = None
    """``report.json`` (with ``loss_curve.svg`` beside it), written when the job ended."""
