"""Drives one job through its steps: record, call, record, next — resumable at every boundary.

The job record is saved before a step's call (status running, attempt n) and after it (its
output); a Conductor that takes over a job re-sends a running step with the same idempotency
key, so an agent that already finished it answers from its stored result.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from agents.conductor.job_store import JobStore
from agents.conductor.settings import JobSettings
from agents.conductor.steps import StepCall, closing_call, data_gate, register_call, step_calls, step_output
from protocol import InvalidParams, JobEvent, MethodNotFound, RpcError
from protocol.agents.conductor import STEPS, TERMINAL_STATES, JobRecord, JobState, StepName, StepRecord
from runtime import Catalog, SwarmClient, ToolFailed

__all__ = ["JobDriver", "LeaseLost"]

log = structlog.get_logger("agent.conductor.driver")

WATCH_INTERVAL_S = 1.0
"""How often a running step checks for a cancel request and renews the lease."""

Publish = Callable[[JobEvent], Awaitable[None]]


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
    ) -> None:
        self.job = job
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

    async def _event(self, kind: str, *, step: str | None = None, message: str | None = None, **data: Any) -> None:
        terminal = kind == "state_changed" and (self.job.state in TERMINAL_STATES or self.job.state == "paused_budget")
        await self._publish(
            JobEvent(
                job_id=self.job.job_id,
                kind=kind,
                state=self.job.state,
                step=step,
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
        await self._event("state_changed", message=message or error or state)

    async def _cancelled(self) -> bool:
        return await self._store.cancel_requested(self.job.job_id)

    async def run(self) -> JobRecord:
        job = self.job
        if job.state in TERMINAL_STATES or job.state == "paused_budget":
            return job
        try:
            for name in STEPS:
                record = job.step(name)
                if record.status == "done":
                    continue
                if await self._cancelled():
                    raise _Cancelled()
                await self._check_budget()
                await self._run_step(record)
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
            status = await self._client.call("cost_monitor", "budget_status", {})
        except RpcError as exc:
            log.warning("budget status unavailable; continuing", job=self.job.job_id, error=exc.message)
            return
        if not status.is_error and (status.structured_content or {}).get("stopped"):
            raise _Paused("a budget passed its stop threshold; resume_job continues the job once there is budget")

    async def _run_step(self, record: StepRecord) -> None:
        job, name = self.job, record.name
        if job.state != name:
            await self._set_state(name, f"{name} started")
        if name == "data_qa":
            await self._gate(record)
            return
        if name == "knowledge_transfer" and not await self._warm_start_possible(record):
            return
        settings = self._settings
        while True:
            if record.status != "running":
                record.attempts += 1
                record.status, record.started_at, record.error = "running", time.time(), None
                await self._save()
                await self._event("step_started", step=name, message=f"{name} attempt {record.attempts}")
            started = time.monotonic()
            try:
                output = await self._perform(record)
            except _Permanent as exc:
                record.status, record.error = "failed", str(exc)
                await self._save()
                await self._event("step_finished", step=name, message=f"{name} failed: {exc}", ok=False)
                raise
            except (RpcError, ToolFailed) as exc:
                record.status, record.error = "failed", str(exc)
                await self._save()
                if record.attempts - record.attempt_base >= settings.retries:
                    await self._event("step_finished", step=name, message=f"{name} failed: {exc}", ok=False)
                    raise _Permanent(f"{name} failed after {record.attempts} attempts: {exc}") from exc
                delay = settings.backoff_s * 2 ** (record.attempts - record.attempt_base - 1)
                log.warning("step failed; retrying", job=job.job_id, step=name, error=str(exc), retry_in_s=delay)
                await self._event("log", step=name, message=f"{name} attempt {record.attempts} failed: {exc}")
                await anyio.sleep(delay)
                continue
            seconds = time.monotonic() - started
            verdict = self._verdict(name, output)
            record.status, record.output, record.finished_at = "failed" if verdict else "done", output, time.time()
            record.seconds, record.error = round(seconds, 3), verdict
            # Usage first: a Conductor that dies before the save re-sends the step (answered from the
            # agent's stored result) and reports the same usage key again, which the ledger keeps once.
            await self._report_usage(record)
            await self._save()
            message = f"{name} failed: {verdict}" if verdict else f"{name} done in {seconds:.1f}s"
            await self._event("step_finished", step=name, message=message, ok=verdict is None)
            if verdict:
                raise _Permanent(verdict)
            return

    async def _perform(self, record: StepRecord) -> dict[str, Any]:
        """The step's calls in order; a part's result is saved as it arrives, so a retry skips it."""
        job, name = self.job, record.name
        parts: dict[str, dict[str, Any]] = record.output.setdefault("parts", {})
        calls = step_calls(job, name, self._settings)
        for call in calls:
            if call.part in parts:
                continue
            parts[call.part] = await self._call_watching_cancel(call, record)
            if len(calls) > 1:
                await self._save()
        closing = closing_call(job, name, parts, self._settings)
        closed = await self._call_watching_cancel(closing, record) if closing else None
        return step_output(job, name, parts, closed)

    async def _call_watching_cancel(self, step: StepCall, record: StepRecord) -> dict[str, Any]:
        """One tool call of the step; a cancel request abandons the wait (the agent's own work runs out)."""
        job = self.job
        agent, tool, arguments, timeout = step.agent, step.tool, step.arguments, step.timeout_s
        record.agent = agent
        key = f"{job.job_id}:{record.name}:{record.attempts}" + (f":{step.part}" if step.part else "")
        result: dict[str, Any] = {}
        cancelled = False
        paused: _Paused | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal cancelled, paused
                last_budget_check = time.monotonic()
                while True:
                    await anyio.sleep(WATCH_INTERVAL_S)
                    try:
                        cancelled = await self._cancelled()
                        held = await self._store.renew(job.job_id, self._owner)
                        if time.monotonic() - last_budget_check >= self._settings.budget_check_s:
                            last_budget_check = time.monotonic()
                            await self._check_budget()
                    except RpcError as exc:  # the broker blinked: keep waiting for the step
                        log.warning("could not check the job's lease", job=job.job_id, error=exc.message)
                        continue
                    except _Paused as exc:
                        paused = exc
                    if cancelled or paused or not held:
                        tg.cancel_scope.cancel()
                        return

            async def call() -> None:
                # Failures are kept and raised outside the task group, which would wrap them.
                nonlocal failure
                try:
                    reply = await self._client.call(
                        agent, tool, arguments, timeout=timeout, idempotency_key=key, trace_id=job.job_id
                    )
                except (InvalidParams, MethodNotFound) as exc:
                    failure = _Permanent(f"{agent}.{tool} refused the step: {exc.message}")
                except RpcError as exc:
                    failure = exc
                else:
                    if not reply.is_error:
                        result.update(reply.structured_content or {})
                    elif "step" in (reply.structured_content or {}):
                        failure = ToolFailed(agent, tool, reply)  # training stopped at a checkpoint: re-run resumes
                    else:
                        data = reply.structured_content or {}
                        failure = _Permanent(f"{agent}.{tool}: {data.get('error') or reply.content}")
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            tg.start_soon(call)
        if cancelled or paused:
            # The running step stops too (training checkpoints at its next step and ends).
            with anyio.CancelScope(shield=True):
                await self._client.bus.cancel_request(agent, key)
            record.status, record.error = "failed", "paused by the budget" if paused else "cancelled"
            await self._save()
            raise paused or _Cancelled()
        if failure is not None:
            raise failure
        if not result:
            raise LeaseLost(job.job_id)
        return result

    async def _register(self) -> None:
        """Index the finished domain for warm starts; a missing Knowledge Transfer agent only costs that."""
        call = register_call(self.job)
        try:
            key = f"{self.job.job_id}:register"
            reply = await self._client.call(
                call.agent, call.tool, call.arguments, timeout=call.timeout_s, idempotency_key=key
            )
        except RpcError as exc:
            log.warning("domain not indexed for warm starts", job=self.job.job_id, error=exc.message)
            return
        if reply.is_error:
            log.warning("domain not indexed for warm starts", job=self.job.job_id, error=str(reply.content))

    @staticmethod
    def _verdict(name: StepName, output: dict[str, Any]) -> str | None:
        """Why a step that ran fine still stops the job (model QA said no), or None."""
        if name != "model_qa":
            return None
        failed = [
            f"{m['model_id']} scored {m['report']['score']:.1f}%: " + "; ".join(m["report"]["reasons"][:6])
            for m in output["models"]
            if not m["report"]["passed"]
        ]
        return "model QA did not pass: " + " | ".join(failed) if failed else None

    async def _warm_start_possible(self, record: StepRecord) -> bool:
        """Skip the step (recorded as done, no recommendation) when it was not asked for or nobody can answer."""
        why = None
        if self.job.spec.scope != "domain":
            why = "warm starts are for domain jobs"
        elif not self.job.spec.warm_start:
            why = "warm start not requested"
        elif not await self._client.agents("knowledge_transfer"):
            why = "no knowledge_transfer agent running"
        if why is None:
            return True
        now = time.time()
        record.status, record.output, record.agent = "done", {"domain": None, "skipped": why}, "conductor"
        record.started_at = record.finished_at = now
        record.seconds = 0.0
        await self._save()
        await self._event("step_finished", step=record.name, message=f"knowledge transfer skipped: {why}")
        return False

    async def _gate(self, record: StepRecord) -> None:
        crisis = any(self._catalog.domain(d).crisis_safety for d in self.job.domains)
        passed, result = data_gate(self.job, self._settings, crisis)
        record.attempts += 1
        record.status = "done" if passed else "failed"
        record.output, record.started_at, record.finished_at, record.seconds = result, time.time(), time.time(), 0.0
        record.agent = "conductor"
        await self._save()
        await self._event("step_finished", step="data_qa", message="data gate " + ("passed" if passed else "failed"))
        if not passed:
            raise _Permanent("data_qa: " + "; ".join(result["reasons"]))

    async def _report_usage(self, record: StepRecord) -> None:
        plan = self.job.plan
        usage = {
            "job_id": self.job.job_id,
            "step": record.name,
            "attempt": record.attempts,
            "agent": record.agent or "conductor",
            "target": self.job.spec.target,
            "device": plan.device if record.name == "train" else "cpu",
            "provider": plan.provider if record.name == "train" else "local",
            "seconds": record.seconds or 0.0,
        }
        if record.name == "train" and plan.gpu:
            usage["gpu"] = plan.gpu
        try:
            reply = await self._client.call(
                "cost_monitor",
                "record_usage",
                usage,
                idempotency_key=f"usage:{self.job.job_id}:{record.name}:{record.attempts}",
            )
        except RpcError as exc:
            log.warning("usage not recorded", job=self.job.job_id, step=record.name, error=exc.message)
            return
        if not reply.is_error:
            record.usd = float((reply.structured_content or {}).get("entry", {}).get("usd", 0.0))
