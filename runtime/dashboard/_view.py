"""What the dashboard shows, gathered from the swarm's own read-only tools.

Each section is asked for on its own: an agent that is down empties its section and says why,
it never takes the page down.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol import AgentInstance, MeetaraError
from protocol.agents.conductor import TERMINAL_STATES, JobRecord, JobReport, ListJobsOutput, ValidateOutputs
from protocol.agents.cost_monitor import BudgetStatus, CostReportOutput
from protocol.agents.gguf_creation import ListModelsOutput, ManifestEntry, VersionFilesOutput
from protocol.agents.quality_assurance import ModelQAReport
from runtime._client import SwarmClient
from runtime.mcp_gateway import DeadLetterInfo, dead_letters

__all__ = ["DashboardView", "JobView", "ModelView", "ViewSource"]

T = TypeVar("T")

_SECTION_ERRORS = (MeetaraError, TimeoutError, ValidationError)
"""What an agent that is down, slow, or of another version raises: its part of the page says so."""
M = TypeVar("M", bound=BaseModel)


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobView(_View):
    """One job: its record (steps, plan), its report once it ended, its models' QA reports."""

    record: JobRecord
    report: JobReport | None = None
    qa: list[ModelQAReport] = Field(default_factory=list)
    """From the model QA step's record: a refused model's report too, which no deploy keeps."""


def _qa_reports(record: JobRecord) -> list[ModelQAReport]:
    output = next((s.output for s in record.steps if s.name == "model_qa"), None)
    if not output:
        return []
    try:
        return [m.report for m in ValidateOutputs.model_validate(output).models]
    except ValidationError:
        return []  # a record from an older version: the page does without


class ModelView(_View):
    """One deployed production model with the QA report it was deployed on."""

    entry: ManifestEntry
    qa: ModelQAReport | None = None
    problem: str | None = None
    """Why the QA report is missing, when it is."""


class DashboardView(_View):
    """Everything on the page at one moment."""

    at: float
    jobs: list[JobView] = Field(default_factory=list)
    budgets: BudgetStatus | None = None
    costs: CostReportOutput | None = None
    models: list[ModelView] = Field(default_factory=list)
    agents: list[AgentInstance] = Field(default_factory=list)
    dead_letters: list[DeadLetterInfo] = Field(default_factory=list)
    problems: dict[str, str] = Field(default_factory=dict)
    """Section → why it could not be filled."""


class ViewSource:
    """Builds ``DashboardView``s; an ended job's report is asked for once per change of its record."""

    def __init__(self, client: SwarmClient, *, jobs: int = 20, timeout: float = 10.0) -> None:
        self.client = client
        self.jobs = jobs
        self.timeout = timeout
        self._reports: dict[str, tuple[float, JobReport]] = {}

    async def _call(self, agent: str, tool: str, arguments: dict[str, Any], model: type[M]) -> M:
        return await self.client.call_model(agent, tool, arguments, model, timeout=self.timeout)

    async def _job(self, job_id: str) -> JobView:
        record = await self._call("conductor", "job_status", {"job_id": job_id}, JobRecord)
        if record.state not in TERMINAL_STATES and record.state != "paused_budget":
            return JobView(record=record, qa=_qa_reports(record))
        # Kept while the record is unchanged: a failed or paused job can be resumed.
        updated, report = self._reports.get(job_id, (None, None))
        if report is None or updated != record.updated_at:
            report = await self._call("conductor", "job_report", {"job_id": job_id}, JobReport)
            self._reports[job_id] = (record.updated_at, report)
        return JobView(record=record, report=report, qa=_qa_reports(record))

    async def _jobs(self, problems: dict[str, str]) -> list[JobView]:
        listed = await self._call("conductor", "list_jobs", {"limit": self.jobs}, ListJobsOutput)
        views: dict[str, JobView] = {}
        failed: list[str] = []

        async def one(job_id: str) -> None:
            try:
                views[job_id] = await self._job(job_id)
            except _SECTION_ERRORS as exc:  # the other jobs still show
                failed.append(f"job {job_id}: {exc}")

        async with anyio.create_task_group() as tg:
            for summary in listed.jobs:
                tg.start_soon(one, summary.job_id)
        self._reports = {k: v for k, v in self._reports.items() if k in views}  # only what the page shows
        if failed:
            problems["jobs"] = "; ".join(failed)
        return sorted(views.values(), key=lambda v: v.record.created_at, reverse=True)

    async def _model(self, entry: ManifestEntry) -> ModelView:
        files = await self._call(
            "gguf_creation", "version_files", {"model_id": entry.model_id, "version": entry.version}, VersionFilesOutput
        )
        if files.qa_report is None:
            return ModelView(entry=entry, problem="no QA report is deployed with this version")
        try:
            return ModelView(entry=entry, qa=ModelQAReport.model_validate_json(files.documents[files.qa_report]))
        except ValidationError as exc:
            return ModelView(entry=entry, problem=f"unreadable QA report: {str(exc).splitlines()[0]}")

    async def _models(self) -> list[ModelView]:
        listed = await self._call("gguf_creation", "list_models", {"lane": "production"}, ListModelsOutput)
        views: list[ModelView] = []
        for entry in listed.models:
            views.append(await self._model(entry))
        return views

    async def _dead_letters(self) -> list[DeadLetterInfo]:
        return await dead_letters(self.client.bus, count=100)

    async def view(self) -> DashboardView:
        view = DashboardView(at=time.time())

        async def fill(section: str, get: Callable[[], Awaitable[T]], put: Callable[[T], None]) -> None:
            try:
                put(await get())
            except _SECTION_ERRORS as exc:
                view.problems[section] = str(exc) or type(exc).__name__

        def setter(name: str) -> Callable[[object], None]:
            return lambda value: setattr(view, name, value)

        cost_args = {"period": "month", "by": "job"}
        async with anyio.create_task_group() as tg:
            tg.start_soon(fill, "jobs", lambda: self._jobs(view.problems), setter("jobs"))
            tg.start_soon(fill, "models", self._models, setter("models"))
            tg.start_soon(fill, "agents", self.client.agents, setter("agents"))
            tg.start_soon(fill, "dead letters", self._dead_letters, setter("dead_letters"))
            tg.start_soon(
                fill,
                "budgets",
                lambda: self._call("cost_monitor", "budget_status", {}, BudgetStatus),
                setter("budgets"),
            )
            tg.start_soon(
                fill,
                "costs",
                lambda: self._call("cost_monitor", "cost_report", cost_args, CostReportOutput),
                setter("costs"),
            )
        return view
