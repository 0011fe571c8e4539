"""Drives one job through its steps: record, call, record, next — resumable at every boundary.

The job record is saved before a step's call (status running, attempt n) and after it (its
output); a Conductor that takes over a job re-sends a running step with the same idempotency
key, so an agent that already finished it answers from its stored result. The call's progress
token is that key too: what the agent reports becomes the job's progress events here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import structlog

from agents.conductor import tools
from agents.conductor.job_store import JobStore
from agents.conductor.settings import JobSettings
from agents.conductor.steps import PARTS, PIPELINE, LocalStep, Step, ToolStep, registration
from agents.conductor.tools import AgentTool
from protocol import CallToolResult, InvalidParams, JobEvent, MethodNotFound, ProgressParams, RpcError, ToolModel
from protocol.agents.conductor import TERMINAL_STATES, JobRecord, JobState, StepName, StepRecord
from protocol.agents.cost_monitor import BudgetStatusInput, RecordUsageInput, TokenUsage
from protocol.agents.gpu_optimization import DeviceProfile, TrainOutput
from runtime import Catalog, OnProgress, SwarmClient, ToolFailed, follow_progress

__all__ = ["JobDriver", "LeaseLost"]

log = structlog.get_logger("agent.conductor.driver")

WATCH_INTERVAL_S = 1.0
"""How often a running step checks for a cancel request and renews the lease."""
REGISTER_TIMEOUT_S = 600.0
AGENT_POLL_MAX_S = 10.0
"""Longest pause between two looks for a live instance of an agent a step waits for."""

Publish = Callable[[JobEvent], Awaitable[None]]
In = TypeVar("In", bound=ToolModel)
Res = TypeVar("Res", bound=ToolModel)
Out = TypeVar("Out")


class LeaseLost(Exception):
    """Another Conductor holds this job now; stop driving it without touching the record."""


class _Permanent(Exception):
    """A step failed in a way retrying cannot fix."""


class _Cancelled(_Permanent):
    """A cancel request arrived."""


class _Paused(Exception):
    """The budget stopped the job."""


class JobDriver:
    """Runs one job to a terminal state (or until the lease is lost or the host stops)."""

    def __init__(
        self,
        job: JobRecord,
        *,
        store: JobStore,
        client: SwarmClient,
        catalog: Catalog,
        settings: JobSettings,
        owner: str,
        publish: Publish,
        finished: Callable[[JobRecord], Awaitable[None]] | None = None,
    ) -> None:
        """``finished``: run once the job has reached a terminal state, before that is announced."""
        self.job = job
        self._finished = finished
        self._store = store
        self._client = client
        self._catalog = catalog
        self._settings = settings
        self._owner = owner
        self._publish = publish

    async def _save(self) -> None:
        if not await self._store.renew(self.job.job_id, self._owner):
            raise LeaseLost(self.job.job_id)
        self.job.updated_at = time.time()
        await self._store.save(self.job)

    async def _event(
        self,
        kind: str,
        *,
        step: str | None = None,
        message: str | None = None,
        progress: float | None = None,
        total: float | None = None,
        **data: Any,
    ) -> None:
        terminal = kind == "state_changed" and (self.job.state in TERMINAL_STATES or self.job.state == "paused_budget")
        await self._publish(
            JobEvent(
                job_id=self.job.job_id,
                kind=kind,
                state=self.job.state,
                step=step,
                progress=progress,
                total=total,
                message=message,
                terminal=terminal,
                data=data,
            )
        )

    async def _set_state(self, state: JobState, message: str | None = None, error: str | None = None) -> None:
        self.job.state = state
        if error is not None:
            self.job.error = error
        if state in TERMINAL_STATES:
            self.job.finished_at = time.time()
        await self._save()
        if state in TERMINAL_STATES and self._finished is not None:
            await self._finished(self.job)  # the report files exist by the time anyone hears the job ended
        await self._event("state_changed", message=message or error or state)

    async def _cancelled(self) -> bool:
        return await self._store.cancel_requested(self.job.job_id)

    async def run(self) -> JobRecord:
        job = self.job
        if job.state in TERMINAL_STATES or job.state == "paused_budget":
            return job
        try:
            for step in PIPELINE:
                record = job.step(step.name)
                if record.status == "done":
                    continue
                if await self._cancelled():
                    raise _Cancelled("cancelled by request")
                await self._check_budget()
                await self._run_step(step, record)
            if job.spec.scope == "domain":
                await self._register()
            await self._set_state("done", "deployed")
        except _Cancelled:
            await self._set_state("cancelled", "cancelled by request", error="cancelled by request")
        except _Permanent as exc:
            await self._set_state("failed", error=str(exc))
        except _Paused as exc:
            await self._set_state("paused_budget", error=str(exc))
        return job

    async def _check_budget(self) -> None:
        try:
            status = await tools.BUDGET_STATUS.call(self._client, BudgetStatusInput())
        except (RpcError, ToolFailed) as exc:
            log.warning("budget status unavailable; continuing", job=self.job.job_id, error=str(exc))
            return
        if status.stopped:
            raise _Paused("a budget passed its stop threshold; resume_job continues the job once there is budget")

    async def _run_step(self, step: Step[Any], record: StepRecord) -> None:
        if self.job.state != step.name:
            await self._set_state(step.name, f"{step.name} started")
        if isinstance(step, LocalStep):
            record.attempts += 1
            record.agent, record.started_at = "conductor", time.time()
            await self._finish(step, record, step.decide(self.job, self._settings, self._catalog), 0.0)
            return
        assert isinstance(step, ToolStep)  # the only other kind
        skipped = await step.skip(self.job, self._client) if step.skip else None
        if skipped is not None:
            await self._skip(step, record, *skipped)
            return
        output, seconds = await self._attempts(step, record)
        await self._finish(step, record, output, seconds)

    async def _skip(self, step: Step[Out], record: StepRecord, why: str, output: Out) -> None:
        record.status, record.output, record.agent = "done", step.dump(output), "conductor"
        record.started_at = record.finished_at = time.time()
        record.seconds = 0.0
        await self._save()
        await self._event("step_finished", step=step.name, message=f"{step.name} skipped: {why}")

    async def _finish(self, step: Step[Out], record: StepRecord, output: Out, seconds: float) -> None:
        """Record the step's output; a verdict on it (model QA said no) fails the job."""
        verdict = step.verdict(output)
        record.status, record.error = "failed" if verdict else "done", verdict
        record.output, record.finished_at, record.seconds = step.dump(output), time.time(), round(seconds, 3)
        if isinstance(step, ToolStep):
            # Usage first: a Conductor that dies before the save re-sends the step (answered from the
            # agent's stored result) and reports the same usage key again, which the ledger keeps once.
            # Training is priced as the host that ran it says it is (replicas may be rented apiece).
            host = output.plan.device if isinstance(output, TrainOutput) else None
            await self._report_usage(step, record, seconds=record.seconds or 0.0, tokens=step.tokens(output), host=host)
        await self._save()
        message = verdict or f"{step.name} done in {seconds:.1f}s"
        await self._event("step_finished", step=step.name, message=message, ok=verdict is None)
        if verdict:
            raise _Permanent(verdict)

    async def _attempts(self, step: ToolStep[Any, Any, Out], record: StepRecord) -> tuple[Out, float]:
        """The step's calls until they succeed, retried with backoff while retrying can help."""
        settings, name = self._settings, step.name
        while True:
            if record.status != "running":
                record.attempts += 1
                record.status, record.started_at, record.error = "running", time.time(), None
                await self._save()
                await self._event("step_started", step=name, message=f"{name} attempt {record.attempts}")
            started = time.monotonic()
            try:
                return await self._perform(step, record), time.monotonic() - started
            except (_Permanent, _Paused) as exc:
                record.status, record.error = "failed", str(exc)
                await self._save()
                if isinstance(exc, _Permanent):
                    await self._event("step_finished", step=name, message=f"{name} failed: {exc}", ok=False)
                raise
            except (RpcError, ToolFailed) as exc:
                record.status, record.error = "failed", str(exc)
                error = (exc.result.structured_content or {}) if isinstance(exc, ToolFailed) else {}
                tokens = step.failed_tokens(error)
                if tokens is not None:
                    # Tokens a failed call paid for (a teacher gone mid-round): the retry reuses its answers
                    # without paying again, so this attempt's ledger entry is where they are counted.
                    spent = time.monotonic() - started
                    await self._report_usage(step, record, seconds=spent, tokens=tokens, final=False)
                await self._save()
                if record.attempts - record.attempt_base >= settings.retries:
                    await self._event("step_finished", step=name, message=f"{name} failed: {exc}", ok=False)
                    raise _Permanent(f"{name} failed after {record.attempts} attempts: {exc}") from exc
                delay = settings.backoff_s * 2 ** (record.attempts - record.attempt_base - 1)
                log.warning("step failed; retrying", job=self.job.job_id, step=name, error=str(exc), retry_in_s=delay)
                await self._event("log", step=name, message=f"{name} attempt {record.attempts} failed: {exc}")
                await anyio.sleep(delay)

    async def _perform(self, step: ToolStep[Any, Res, Out], record: StepRecord) -> Out:
        """The step's calls in order; a part's result is saved as it arrives, so a retry skips it."""
        job = self.job
        if PARTS not in record.output:
            record.output = {PARTS: {}}  # a step that recorded a result before (then resumed) starts afresh
        stored: dict[str, Any] = record.output[PARTS]
        parts = {part: step.tool.output.model_validate(result) for part, result in stored.items()}
        calls = step.calls(job)
        for part, arguments in calls.items():
            if part in parts:
                continue
            parts[part] = await self._call(step, step.tool, arguments, record, part)
            stored[part] = parts[part].model_dump(mode="json")
            if len(calls) > 1:
                await self._save()
        closing = step.closing
        closing_arguments = closing.arguments(job, parts) if closing else None
        if closing is None or closing_arguments is None:
            return step.record(job, parts)
        return closing.record(parts, await self._call(step, closing.tool, closing_arguments, record, ""))

    async def _call(
        self, step: Step[Any], tool: AgentTool[In, Res], arguments: In, record: StepRecord, part: str
    ) -> Res:
        """One tool call of the step; a cancel request, a spent budget or a lost lease abandons the wait."""
        job = self.job
        record.agent = tool.agent
        key = f"{job.job_id}:{record.name}:{record.attempts}" + (f":{part}" if part else "")
        reply: CallToolResult | None = None
        stop: Exception | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal stop
                stop = await self._watch()
                tg.cancel_scope.cancel()

            async def call() -> None:
                # Failures are kept and raised outside the task group, which would wrap them.
                nonlocal reply, failure
                try:
                    await self._agent_live(step, tool.agent, record)
                    async with follow_progress(self._client.bus, key, self._progress_events(record.name, part)):
                        # Sent even if the instance just went: its durable inbox holds the request.
                        reply = await self._client.call(
                            tool.agent,
                            tool.name,
                            arguments,
                            timeout=step.timeout_s(self._settings),
                            idempotency_key=key,
                            progress_token=key,
                            trace_id=job.job_id,
                            require_live=False,
                        )
                except (InvalidParams, MethodNotFound) as exc:
                    failure = _Permanent(f"{tool.agent}.{tool.name} refused the step: {exc.message}")
                except (RpcError, _Permanent) as exc:
                    failure = exc
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            tg.start_soon(call)
        if isinstance(stop, _Cancelled | _Paused):
            # The running step stops too (training checkpoints at its next step and ends).
            with anyio.CancelScope(shield=True):
                await self._client.bus.cancel_request(tool.agent, key)
        if stop is not None:
            raise stop
        if failure is not None:
            raise failure
        assert reply is not None
        return _result(tool, reply)

    async def _agent_live(self, step: Step[Any], agent: str, record: StepRecord) -> None:
        """Return once ``agent`` has a live instance; its absence is no failed attempt, only past the horizon.

        Runs beside ``_watch``, so a cancel, a spent budget or a lost lease still end the wait.
        """
        if await self._live(agent):
            return
        horizon, started = step.agent_wait_s(self._settings), time.monotonic()
        record.waiting_for = agent
        await self._save()
        await self._event("waiting", step=step.name, message=f"waiting for {agent}", agent=agent)
        log.warning("waiting for an agent", job=self.job.job_id, step=step.name, agent=agent, horizon_s=horizon)
        delay = 0.25
        try:
            while not await self._live(agent):
                waited = time.monotonic() - started
                if waited >= horizon:
                    raise _Permanent(
                        f"{step.name}: no live instance of agent {agent!r} for {waited:.0f} s "
                        f"(start it: meetara up / meetara agent {agent}); resume_job continues the job"
                    )
                await anyio.sleep(min(delay, horizon - waited))
                delay = min(delay * 2, AGENT_POLL_MAX_S)
        finally:
            record.waiting_for = None
        waited = time.monotonic() - started
        await self._save()
        await self._event("log", step=step.name, message=f"{agent} is live again after {waited:.0f} s")

    async def _live(self, agent: str) -> bool:
        try:
            return bool(await self._client.agents(agent))
        except RpcError as exc:  # the broker blinked: the agent may well be there
            log.warning("could not look for live agents", job=self.job.job_id, error=exc.message)
            return False

    async def _watch(self) -> Exception:
        """Wait until a running step must stop: a cancel request, a spent budget or a lost lease."""
        job = self.job
        last_budget_check = time.monotonic()
        while True:
            await anyio.sleep(WATCH_INTERVAL_S)
            try:
                if await self._cancelled():
                    return _Cancelled("cancelled by request")
                if not await self._store.renew(job.job_id, self._owner):
                    return LeaseLost(job.job_id)
                if time.monotonic() - last_budget_check >= self._settings.budget_check_s:
                    last_budget_check = time.monotonic()
                    await self._check_budget()
            except RpcError as exc:  # the broker blinked: keep waiting for the step
                log.warning("could not check the job's lease", job=job.job_id, error=exc.message)
            except _Paused as exc:
                return exc

    def _progress_events(self, step: StepName, part: str) -> OnProgress:
        """The job's progress events, out of what a step's call reports."""

        async def publish(p: ProgressParams) -> None:
            # A count without a total only says "still working": the event carries the message alone.
            measured = p.progress if p.total is not None else None
            data = {**(p.meta or {}), **({"part": part} if part else {})}
            await self._event("progress", step=step, message=p.message, progress=measured, total=p.total, **data)

        return publish

    async def _bookkeeping(self, tool: AgentTool[In, Res], arguments: In, *, key: str, wait_s: float) -> Res | None:
        """Call a tool the job need not wait for (usage, the warm-start index) without losing it.

        The request may wait in the agent's durable inbox as long as a step would wait for the
        agent: one that is away (restarting) applies it once back, once by its idempotency key.
        The job waits up to ``wait_s`` for the reply of a live agent, and not at all for an absent
        one; ``None`` when there is no reply (yet).
        """
        horizon = self._settings.wait_for_agent_s()
        if not await self._live(tool.agent):
            await self._client.enqueue(
                tool.agent, tool.name, arguments, idempotency_key=key, expires_in_s=horizon, trace_id=self.job.job_id
            )
            log.warning("agent away; its call waits in its inbox", job=self.job.job_id, tool=tool.name)
            return None
        with anyio.move_on_after(wait_s):
            return await tool.call(self._client, arguments, timeout=horizon, idempotency_key=key, require_live=False)
        log.warning("no reply yet; the call waits in the agent's inbox", job=self.job.job_id, tool=tool.name)
        return None

    async def _register(self) -> None:
        """Index the finished domain for warm starts; a missing Knowledge Transfer agent only costs that."""
        job_id = self.job.job_id
        try:
            await self._bookkeeping(
                tools.REGISTER, registration(self.job), key=f"{job_id}:register", wait_s=REGISTER_TIMEOUT_S
            )
        except (RpcError, ToolFailed) as exc:
            log.warning("domain not indexed for warm starts", job=job_id, error=str(exc))

    async def _report_usage(
        self,
        step: ToolStep[Any, Any, Any],
        record: StepRecord,
        *,
        seconds: float,
        tokens: TokenUsage | None,
        final: bool = True,
        host: DeviceProfile | None = None,
    ) -> None:
        """``host``: the device that ran the step, when its output says (else the plan's)."""
        job, plan, on_device = self.job, self.job.plan, step.on_training_device
        device, provider, gpu = (host.name, host.provider, host.gpu) if host else (plan.device, plan.provider, plan.gpu)
        usage = RecordUsageInput(
            job_id=job.job_id,
            step=record.name,
            attempt=record.attempts,
            agent=record.agent or "conductor",
            target=job.spec.target,
            device=device if on_device else "cpu",
            provider=provider if on_device else "local",
            gpu=gpu if on_device else None,
            seconds=seconds,
            tokens=tokens,
        )
        try:
            recorded = await self._bookkeeping(
                tools.RECORD_USAGE,
                usage,
                key=f"usage:{job.job_id}:{record.name}:{record.attempts}",
                wait_s=self._client.timeout,
            )
        except (RpcError, ToolFailed) as exc:
            log.warning("usage not recorded", job=job.job_id, step=record.name, error=str(exc))
            return
        if final:
            record.usd = recorded.entry.usd if recorded is not None else 0.0
            record.usd_pending = recorded is None


def _result(tool: AgentTool[Any, Res], reply: CallToolResult) -> Res:
    """The call's typed result; an error a re-run cannot fix is permanent."""
    data = reply.structured_content or {}
    if not reply.is_error:
        return tool.output.model_validate(data)
    if "step" in data:
        raise ToolFailed(tool.agent, tool.name, reply)  # training stopped at a checkpoint: a re-run resumes
    raise _Permanent(f"{tool.agent}.{tool.name}: {data.get('error') or reply.content}")
