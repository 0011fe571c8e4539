"""The gateway's own tools (agent name ``swarm``): whole jobs with progress, live agents, dead letters.

Declared with the same ``@tool`` decorator as the agents' tools, so their descriptions, schemas
and annotations come from the same place (docstrings, pydantic models, honest hints).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import anyio
import structlog
from pydantic import Field

from bus import Bus
from protocol import AgentInstance, RpcError, ToolModel
from protocol.agents.conductor import TERMINAL_STATES, JobIdInput, JobRecord, JobReport, JobSpec, SubmitJobOutput
from runtime._client import SwarmClient
from runtime._errors import ToolError
from runtime._tools import ToolRegistry, tool
from runtime.mcp_gateway._progress import ReportProgress, follow_job

__all__ = ["SWARM", "SWARM_TOOLS", "DeadLetterInfo", "GatewayCall", "SwarmTools", "dead_letters"]

log = structlog.get_logger("runtime.mcp_gateway")

SWARM = "swarm"
"""Namespace of the gateway's own tools (``swarm_run_job``…)."""

CANCEL_TIMEOUT_S = 10.0
"""How long a cancelled ``run_job`` waits for the Conductor to accept the cancel."""


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """What a gateway tool gets besides its arguments: the MCP request's progress channel."""

    progress: ReportProgress


class AgentsInput(ToolModel):
    """Arguments of ``swarm.agents``."""

    agent: str | None = Field(default=None, max_length=64)
    """Only instances of this agent."""


class AgentsOutput(ToolModel):
    """Result of ``swarm.agents``."""

    agents: list[AgentInstance]
    """Live instances, sorted by agent then instance."""


class DeadLettersInput(ToolModel):
    """Arguments of ``swarm.dlq_list``."""

    count: int = Field(default=100, ge=1, le=10_000)
    """Most letters to return, oldest first."""


class DeadLetterInfo(ToolModel):
    """One dead-lettered message."""

    id: str
    """Dead-letter id, for ``dlq_replay`` and ``dlq_purge``."""
    source: str
    """The stream it came from (an agent's inbox)."""
    deliveries: int
    """How often it was delivered before it was given up on."""
    failed_at: float
    """When (epoch seconds)."""
    error: str
    """Why it was given up on."""
    message: str
    """What it was: the method and, for a tool call, the tool."""


class DeadLettersOutput(ToolModel):
    """Result of ``swarm.dlq_list``."""

    letters: list[DeadLetterInfo]


class DeadLetterIdsInput(ToolModel):
    """Which dead letters: some ids, or all of them."""

    ids: list[str] = Field(default_factory=list, max_length=10_000)
    """Dead-letter ids from ``dlq_list``."""
    all: bool = False
    """Every dead letter instead of ``ids``."""


class ReplayOutput(ToolModel):
    """Result of ``swarm.dlq_replay``."""

    replayed: dict[str, str]
    """Dead-letter id → its new entry id in the inbox it came from."""


class PurgeOutput(ToolModel):
    """Result of ``swarm.dlq_purge``."""

    deleted: int
    """Dead letters deleted."""


def _describe(original: dict[str, str]) -> str:
    try:
        message = json.loads(original.get("body", "")).get("message", {})
    except (ValueError, AttributeError):
        return "unreadable entry"
    what = str(message.get("method") or ("response" if "id" in message else "?"))
    if what == "tools/call":
        what += f" {message.get('params', {}).get('name', '?')}"
    return what


async def dead_letters(bus: Bus, *, count: int) -> list[DeadLetterInfo]:
    """The oldest ``count`` dead letters, each with its source, reason and what it was."""
    return [
        DeadLetterInfo(
            id=d.id,
            source=d.stream.rsplit(":", 1)[-1],
            deliveries=d.deliveries,
            failed_at=d.failed_at,
            error=f"[{d.error.code}] {d.error.message}",
            message=_describe(d.original),
        )
        for d in await bus.dead_letters(count=count)
    ]


def _ids(params: DeadLetterIdsInput) -> list[str] | None:
    if bool(params.ids) == params.all:
        raise ToolError("give dead-letter ids or all=true")
    return None if params.all else params.ids


class SwarmTools:
    """Tools the gateway serves itself, on top of the agents' own."""

    def __init__(self, client: SwarmClient, *, call_timeout_s: float, watch_interval_s: float) -> None:
        self.client = client
        self.call_timeout_s = call_timeout_s
        self.watch_interval_s = watch_interval_s

    async def _report(self, job_id: str) -> JobReport:
        return await self.client.call_model(
            "conductor", "job_report", {"job_id": job_id}, JobReport, timeout=self.call_timeout_s
        )

    async def _follow(self, job_id: str, since: str, call: GatewayCall) -> JobReport:
        """Follow the job's events to its end, unless no Conductor is left to drive it."""
        problem: str | None = None

        async def watch_conductor() -> None:
            # Jobs have no deadline, so a job nobody drives would keep the client waiting forever.
            # Two misses in a row: one late liveness refresh on a busy host is not a dead Conductor.
            nonlocal problem
            misses, reason = 0, ""
            while misses < 2:
                await anyio.sleep(self.watch_interval_s)
                try:
                    alive, reason = bool(await self.client.agents("conductor")), "no Conductor is running"
                except RpcError as exc:
                    alive, reason = False, exc.message
                misses = 0 if alive else misses + 1
            problem = reason
            tg.cancel_scope.cancel()

        async def follow() -> None:
            await follow_job(self.client.bus, job_id, since, call.progress)
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_conductor)
            tg.start_soon(follow)
        if problem is not None:
            raise ToolError(
                f"stopped following job {job_id}: {problem}; the job resumes once a Conductor runs again "
                "(follow it with swarm_wait_job)",
                data={"job_id": job_id},
            )
        return await self._report(job_id)

    @tool
    async def run_job(self, params: JobSpec, call: GatewayCall) -> JobReport:
        """Submit a training job to the Conductor and follow it to its end, then return its report.

        The same arguments as conductor_submit_job. Progress notifications follow the pipeline
        (data, data QA, knowledge transfer, train, convert, model QA, deploy: one unit each, with
        training steps as fractions). Cancelling this call cancels the job it started. The report
        says whether the job ended done, failed (and why), cancelled or paused for budget.
        """
        bus = self.client.bus
        since = await bus.transport.last_id(bus.keys.events)
        arguments = params.model_dump(mode="json", exclude_unset=True)
        submitted = await self.client.call_model(
            "conductor", "submit_job", arguments, SubmitJobOutput, timeout=self.call_timeout_s
        )
        try:
            return await self._follow(submitted.job_id, since, call)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT_S):
                try:
                    await self.client.call("conductor", "cancel_job", {"job_id": submitted.job_id})
                    log.info("job cancelled with its MCP call", job=submitted.job_id)
                except RpcError as exc:
                    log.warning("could not cancel the job of a cancelled call", job=submitted.job_id, error=exc.message)
            raise

    @tool(read_only=True)
    async def wait_job(self, params: JobIdInput, call: GatewayCall) -> JobReport:
        """Follow a submitted job until it ends (done, failed, cancelled or paused for budget) and
        return its report, with progress notifications on the way. Cancelling this call only stops
        following; the job goes on."""
        bus = self.client.bus
        since = await bus.transport.last_id(bus.keys.events)
        job = await self.client.call_model(
            "conductor", "job_status", {"job_id": params.job_id}, JobRecord, timeout=self.call_timeout_s
        )
        if job.state in TERMINAL_STATES or job.state == "paused_budget":
            return await self._report(job.job_id)
        return await self._follow(job.job_id, since, call)

    @tool(read_only=True)
    async def agents(self, params: AgentsInput) -> AgentsOutput:
        """Live agent instances: name, instance, host, process, work in flight and tools."""
        return AgentsOutput(agents=await self.client.agents(params.agent))

    @tool(read_only=True)
    async def dlq_list(self, params: DeadLettersInput) -> DeadLettersOutput:
        """Messages the swarm gave up on (dead letters), oldest first, with the reason for each."""
        return DeadLettersOutput(letters=await dead_letters(self.client.bus, count=params.count))

    @tool
    async def dlq_replay(self, params: DeadLetterIdsInput) -> ReplayOutput:
        """Put dead letters back into the inbox they came from (after the cause was fixed)."""
        bus = self.client.bus
        ids = _ids(params) or [d.id for d in await bus.dead_letters(count=1_000_000)]
        replayed: dict[str, str] = {}
        for letter_id in ids:
            try:
                replayed[letter_id] = await bus.replay_dead_letter(letter_id)
            except (LookupError, ValueError) as exc:
                raise ToolError(str(exc), data={"replayed": replayed}) from None
        return ReplayOutput(replayed=replayed)

    @tool(destructive=True, idempotent=True)
    async def dlq_purge(self, params: DeadLetterIdsInput) -> PurgeOutput:
        """Delete dead letters for good."""
        return PurgeOutput(deleted=await self.client.bus.purge_dead_letters(_ids(params)))


SWARM_TOOLS = ToolRegistry.from_class(SwarmTools, GatewayCall)
"""The specs and definitions of the gateway's own tools."""
