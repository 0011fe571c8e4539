"""Small agents for the gateway tests: tools that echo, count with progress, nap and destroy,
and a scripted Conductor that plays a job's events without training anything."""

from __future__ import annotations

import time

import anyio
import anyio.abc
from pydantic import Field

from protocol import JobEvent, JobEventNotification, ToolModel, new_id
from protocol.agents.conductor import JobIdInput, JobReport, JobSpec, JobSummary, SubmitJobOutput
from runtime import Agent, AgentContext, CallContext, tool


class EchoIn(ToolModel):
    """Arguments of ``toy.echo``."""

    text: str = Field(max_length=100)
    """What to say back."""


class EchoOut(ToolModel):
    """Result of ``toy.echo``."""

    text: str
    """What was said."""


class CountIn(ToolModel):
    n: int = Field(ge=1)
    delay: float = 0.0


class CountOut(ToolModel):
    reached: int
    cancelled: bool


class NapIn(ToolModel):
    seconds: float


class Toy(Agent):
    """Tools with every shape the gateway has to serve."""

    name = "toy"

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self.cancelled = anyio.Event()

    @tool(read_only=True)
    async def echo(self, params: EchoIn) -> EchoOut:
        """Say the text back unchanged."""
        return EchoOut(text=params.text)

    @tool
    async def count(self, params: CountIn, ctx: CallContext) -> CountOut:
        """Count to n with a progress notification per number; stops when the caller cancels."""
        for i in range(1, params.n + 1):
            await ctx.progress(i, params.n, f"at {i}")
            if await ctx.cancelled():
                self.cancelled.set()
                return CountOut(reached=i, cancelled=True)
            await anyio.sleep(params.delay)
        return CountOut(reached=params.n, cancelled=False)

    @tool(read_only=True)
    async def nap(self, params: NapIn) -> EchoOut:
        """Sleep, then answer (longer than the caller waits, in the timeout test)."""
        await anyio.sleep(params.seconds)
        return EchoOut(text="awake")

    @tool(destructive=True)
    async def wipe(self, params: EchoIn) -> EchoOut:
        """Destroy what the text names."""
        return EchoOut(text=f"wiped {params.text}")


class LateIn(ToolModel):
    pass


class Late(Agent):
    """An agent that joins (or leaves) while the gateway runs."""

    name = "late"

    @tool(read_only=True)
    async def hello(self, params: LateIn) -> EchoOut:
        """Say hello."""
        return EchoOut(text="hello")


class ScriptedConductor(Agent):
    """Plays a short job's events on ``submit_job``; target ``forever`` runs until cancelled."""

    name = "conductor"

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self.cancelled_jobs: list[str] = []
        self._cancel = anyio.Event()

    async def _event(self, job_id: str, kind: str, **fields: object) -> None:
        event = JobEvent(job_id=job_id, kind=kind, **fields)  # type: ignore[arg-type]
        await self.ctx.bus.publish_event(JobEventNotification(params=event))

    async def _play(self, job_id: str, forever: bool, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep(0.05)  # after the submit's reply, as the real Conductor
        await self._event(job_id, "submitted", state="planned", message="domain job")
        for step in ("data", "data_qa", "knowledge_transfer"):
            await self._event(job_id, "state_changed", state=step)
            await self._event(job_id, "step_finished", step=step, message=f"{step} done")
        await self._event(job_id, "state_changed", state="train")
        for i in range(1, 4):
            await self._event(job_id, "progress", step="train", progress=i, total=3, data={"loss": 1.0 / i})
            await anyio.sleep(0.02)
        if forever:
            await self._cancel.wait()
            await self._event(job_id, "state_changed", state="cancelled", terminal=True)
            return
        for step in ("train", "convert", "model_qa", "deploy"):
            if step != "train":
                await self._event(job_id, "state_changed", state=step)
            await self._event(job_id, "step_finished", step=step)
        await self._event(job_id, "state_changed", state="done", message="deployed", terminal=True)

    @tool
    async def submit_job(self, params: JobSpec) -> SubmitJobOutput:
        """Accept a job and play its events."""
        job_id = new_id()
        await self.ctx.bus.start_task(self._play, job_id, params.target == "forever")
        return SubmitJobOutput(job_id=job_id, state="planned", domains=[params.target], estimated_usd=0.0)

    @tool(destructive=True, idempotent=True)
    async def cancel_job(self, params: JobIdInput) -> JobSummary:
        """Cancel the job."""
        self.cancelled_jobs.append(params.job_id)
        self._cancel.set()
        now = time.time()
        return JobSummary(
            job_id=params.job_id, scope="domain", target="x", state="cancelled", created_at=now, updated_at=now
        )

    @tool(read_only=True)
    async def job_report(self, params: JobIdInput) -> JobReport:
        """The job's report."""
        return JobReport(
            job_id=params.job_id, state="cancelled" if self._cancel.is_set() else "done",
            spec=JobSpec(target="general_health"), domains=["general_health"], error=None, models=[],
            data_pass_rate=0.9, samples=40, stages=[], total_seconds=1.0, total_usd=0.0, warm_started_from=None,
        )  # fmt: skip
