"""The Conductor: validates what users ask for and drives jobs through the agents."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import anyio
import anyio.abc

from agents.conductor import tools
from agents.conductor.batches import batch_domains, batch_status, free_slots
from agents.conductor.driver import JobDriver, LeaseLost
from agents.conductor.job_store import JobStore
from agents.conductor.planning import plan_job
from agents.conductor.report import build_report, report_folder, write_report_files
from agents.conductor.settings import JobSettings, load_job_settings
from agents.llm.layout import domains_of
from protocol import InvalidParams, JobEvent, JobEventNotification, RpcError, new_id
from protocol.agents.conductor import (
    STEPS,
    TERMINAL_STATES,
    BatchIdInput,
    BatchRecord,
    BatchStatus,
    DescribeDomainInput,
    DomainInfo,
    JobIdInput,
    JobPlan,
    JobRecord,
    JobReport,
    JobSpec,
    JobSummary,
    ListDomainsInput,
    ListDomainsOutput,
    ListJobsInput,
    ListJobsOutput,
    StepName,
    StepRecord,
    SubmitBatchInput,
    SubmitBatchOutput,
    SubmitJobOutput,
)
from protocol.agents.cost_monitor import BudgetStatusInput, EstimateInput
from runtime import Agent, AgentContext, Domain, ToolError, ToolFailed, tool

LEASE_MS = 15_000
"""A job whose Conductor died is taken over by another replica this long after its last renewal."""
SCAN_INTERVAL_S = 2.0
"""How often each Conductor looks for jobs nobody drives."""
MAX_ESTIMATE_HOURS = 10_000
"""The Cost Monitor prices at most this many hours at once."""


def _info(domain: Domain) -> DomainInfo:
    return DomainInfo(
        name=domain.name,
        category=domain.category,
        description=domain.description,
        scope=domain.scope,
        quality_target=domain.quality_target,
        crisis_safety=domain.crisis_safety,
    )


def _summary(job: JobRecord) -> JobSummary:
    return JobSummary(
        job_id=job.job_id,
        scope=job.spec.scope,
        target=job.spec.target,
        state=job.state,
        created_at=job.created_at,
        updated_at=job.updated_at,
        error=job.error,
        batch_id=job.batch_id,
    )


class ConductorAgent(Agent):
    """Validates what users ask for against the catalogue and drives jobs through the agents."""

    name = "conductor"
    description = (
        "Jobs: submit a domain to train, follow it (data, data QA, train, convert, model QA, deploy), "
        "cancel, resume and report; plus the domain catalogue."
    )

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self.store = JobStore(ctx.records, lease_ms=LEASE_MS)
        self.job_settings: JobSettings = load_job_settings(ctx.settings.catalog_dir)
        self._owner = f"{ctx.instance_id}/{new_id()[:8]}"
        self._driving: dict[str, anyio.Event] = {}
        """Jobs this Conductor drives now, each with the event set when its driver has let go of it."""
        self._tg: anyio.abc.TaskGroup | None = None
        self._scan_lock = anyio.Lock()

    # -- driving ------------------------------------------------------------------------------
    async def background(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            while True:
                try:
                    await self._adopt_orphans()
                except RpcError as exc:
                    self.log.warning("job scan failed", error=exc.message)
                await anyio.sleep(SCAN_INTERVAL_S)

    async def _adopt_orphans(self) -> None:
        async with self._scan_lock:  # one scan at a time, or two could each fill a batch's free slots
            await self._adopt_orphans_once()

    async def _adopt_orphans_once(self) -> None:
        jobs = await self.store.all()
        queued = [j for j in jobs if j.batch_id is not None and j.state == "planned" and j.job_id not in self._driving]
        # One Conductor at a time admits queued batch jobs, or two replicas could each fill the same free slots.
        admitting = bool(queued) and await self.store.take_admission(self._owner)
        try:
            slots = await self._free_batch_slots(jobs, queued) if admitting else {}
            for job in reversed(jobs):  # oldest first: a batch starts in the order it was given
                if job.state in TERMINAL_STATES or job.state == "paused_budget" or job.job_id in self._driving:
                    continue
                waits_for_slot = job.batch_id is not None and job.state == "planned"
                if waits_for_slot and slots.get(job.batch_id or "", 0) <= 0:
                    continue
                if await self.store.acquire(job.job_id, self._owner):
                    if waits_for_slot:
                        slots[job.batch_id or ""] -= 1
                    self._start(job)
        finally:
            if admitting:
                with anyio.CancelScope(shield=True), contextlib.suppress(RpcError):
                    await self.store.release_admission(self._owner)

    async def _free_batch_slots(self, jobs: list[JobRecord], queued: list[JobRecord]) -> dict[str, int]:
        """Slots per batch; none while a budget is stopped (a job admitted then would only pause)."""
        try:
            if (await tools.BUDGET_STATUS.call(self.ctx.client, BudgetStatusInput())).stopped:
                return {}
        except (RpcError, ToolFailed) as exc:
            self.log.warning("budget status unavailable; admitting batch jobs", error=str(exc))
        # A planned job leased by another Conductor was admitted there and is about to run.
        started = {j.job_id for j in queued if await self.store.leased(j.job_id)}
        return free_slots(jobs, set(self._driving) | started, await self._batch_limit())

    async def _batch_limit(self) -> int:
        """Jobs of one batch that run at once: a few per live GPU instance (at least one instance's worth)."""
        try:
            replicas = len(await self.ctx.client.agents("gpu_optimization"))
        except RpcError:
            replicas = 1
        return self.job_settings.batch_jobs_per_gpu * max(replicas, 1)

    def _start(self, job: JobRecord) -> None:
        if self._tg is None or job.job_id in self._driving:
            return  # the scan loop picks it up once it runs
        self._driving[job.job_id] = anyio.Event()
        self._tg.start_soon(self._drive, job)

    async def _drive(self, job: JobRecord) -> None:
        async def publish(event: JobEvent) -> None:
            await self.ctx.bus.publish_event(JobEventNotification(params=event), trace_id=job.job_id)

        driver = JobDriver(
            job,
            store=self.store,
            client=self.ctx.client,
            catalog=self.ctx.catalog,
            settings=self.job_settings,
            owner=self._owner,
            publish=publish,
            finished=self._write_report,
        )
        log = self.log.bind(job=job.job_id)
        log.info("driving job", state=job.state)
        try:
            final = await driver.run()
            log.info("job ended", state=final.state, error=final.error)
        except LeaseLost:
            log.warning("lease lost; another Conductor drives the job now")
        except RpcError as exc:
            log.warning("job paused by a broker error; it will be picked up again", error=exc.message)
        except Exception as exc:
            # A defect must fail the job it hit, not the Conductor (or every job would stall).
            log.exception("job driver crashed")
            with contextlib.suppress(RpcError):
                job.state, job.error, job.finished_at = "failed", f"internal error: {exc!r}", time.time()
                await self.store.save(job)
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(RpcError):  # else the lease expires by itself
                    await self.store.release(job.job_id, self._owner)
            self._driving.pop(job.job_id).set()

    async def _write_report(self, job: JobRecord) -> None:
        """The finished job's report files (JSON, loss chart); a failure to write them is logged, not fatal:
        the job's end is announced after this, whatever happens here."""
        settings = self.ctx.settings
        try:
            report = build_report(job, settings.models_dir)
            await anyio.to_thread.run_sync(write_report_files, report, report_folder(settings.data_dir, job.job_id))
        except Exception as exc:
            self.log.warning("job report not written", job=job.job_id, error=repr(exc))

    async def _job(self, job_id: str) -> JobRecord:
        job = await self.store.load(job_id)
        if job is None:
            raise InvalidParams(f"no job {job_id!r}")
        return job

    # -- tools --------------------------------------------------------------------------------
    @tool
    async def submit_job(self, params: JobSpec) -> SubmitJobOutput:
        """Queue a training job: data, data QA, training, GGUF conversion, model QA, deploy.

        scope "domain" trains one domain; "category" one model on all the category's domains;
        "universal" (target "universal") a full and a lite model on all 62. Unknown names, tiers
        or impossible settings are refused with a clear error, as is a job whose estimated cost
        would pass a budget.
        """
        catalog = self.ctx.catalog
        catalog.tier(params.tier)
        domains = domains_of(params.scope, params.target, catalog)
        if not domains:
            raise InvalidParams(f"category {params.target!r} has no domains to train")
        plan = await plan_job(params, domains, self.ctx.client, catalog, self.job_settings, await self.store.all())
        asked = EstimateInput(hours=plan.estimated_hours, provider=plan.provider, gpu=plan.gpu)
        try:
            estimate = await tools.ESTIMATE.call(self.ctx.client, asked)
        except ToolFailed as exc:
            raise ToolError(f"the Cost Monitor could not price the job: {exc}") from exc
        if not estimate.fits:
            raise ToolError(f"job refused: {estimate.reason}", data={"estimated_usd": estimate.usd})
        plan.estimated_usd = estimate.usd
        job = await self._create_job(params, domains, plan)
        await self.store.acquire(job.job_id, self._owner)
        self._start(job)
        return SubmitJobOutput(job_id=job.job_id, state=job.state, domains=domains, estimated_usd=plan.estimated_usd)

    async def _create_job(
        self, spec: JobSpec, domains: list[str], plan: JobPlan, batch_id: str | None = None, job_id: str | None = None
    ) -> JobRecord:
        now = time.time()
        job = JobRecord(
            job_id=job_id or new_id(),
            spec=spec,
            domains=domains,
            plan=plan,
            state="planned",
            steps=[StepRecord(name=s) for s in STEPS],
            created_at=now,
            updated_at=now,
            batch_id=batch_id,
        )
        await self.store.create(job)
        await self.ctx.bus.publish_event(
            JobEventNotification(
                params=JobEvent(
                    job_id=job.job_id,
                    kind="submitted",
                    state=job.state,
                    message=f"{spec.scope} {spec.target}: " + "; ".join(plan.reasons),
                    data={"estimated_usd": plan.estimated_usd, "samples": plan.samples, "batch_id": batch_id},
                )
            ),
            trace_id=job.job_id,
        )
        self.log.info("job submitted", job=job.job_id, target=spec.target, batch=batch_id, plan=plan.reasons)
        return job

    @tool
    async def submit_batch(self, params: SubmitBatchInput) -> SubmitBatchOutput:
        """Queue one domain job per domain (a list, a category's, or all 62), each trained the same way.

        The whole batch is priced first: one that would pass a budget is refused and no job is
        created. Its jobs then run a few at a time per live GPU instance (``batch_jobs_per_gpu`` in
        ``configs/jobs.yaml``), the rest queued; replicas share the training.
        """
        catalog = self.ctx.catalog
        catalog.tier(params.job.tier)
        domains = batch_domains(params, catalog)
        if not domains:
            raise InvalidParams(f"category {params.category!r} has no domains to train")
        options = params.job.model_dump(exclude_unset=True)
        specs = [JobSpec.model_validate({**options, "scope": "domain", "target": d}) for d in domains]
        # Every job of the batch is the same but for its domain: planned once, on the first.
        history = await self.store.all()
        plan = await plan_job(specs[0], domains[:1], self.ctx.client, catalog, self.job_settings, history)
        hours = plan.estimated_hours * len(specs)
        if hours > MAX_ESTIMATE_HOURS:
            raise ToolError(
                f"batch refused: an estimated {hours:.0f} training hours is more than any budget could hold"
            )
        asked = EstimateInput(hours=hours, provider=plan.provider, gpu=plan.gpu)
        try:
            estimate = await tools.ESTIMATE.call(self.ctx.client, asked)
        except ToolFailed as exc:
            raise ToolError(f"the Cost Monitor could not price the batch: {exc}") from exc
        if not estimate.fits:
            raise ToolError(
                f"batch of {len(specs)} jobs refused: {estimate.reason}", data={"estimated_usd": estimate.usd}
            )
        plan.estimated_usd = round(plan.estimated_hours * estimate.usd_per_hour, 4)
        # The batch record first: every job that exists then belongs to a batch its owner can see and cancel.
        batch = BatchRecord(
            batch_id=new_id(),
            spec=params,
            job_ids=[new_id() for _ in specs],
            domains=domains,
            created_at=time.time(),
            estimated_usd=estimate.usd,
        )
        await self.store.create_batch(batch)
        jobs: list[JobRecord] = []
        try:
            for job_id, spec in zip(batch.job_ids, specs, strict=True):
                jobs.append(await self._create_job(spec, [spec.target], plan.model_copy(), batch.batch_id, job_id))
        except RpcError as exc:
            with contextlib.suppress(RpcError):
                for job in jobs:
                    await self._cancel(job)
            raise ToolError(
                f"batch {batch.batch_id} not submitted ({exc.message}); the {len(jobs)} job(s) already made are "
                "cancelled: submit it again"
            ) from exc
        self.log.info("batch submitted", batch=batch.batch_id, jobs=len(jobs), estimated_usd=estimate.usd)
        with contextlib.suppress(RpcError):  # the scan admits them in any case
            await self._adopt_orphans()  # its first jobs start now, not at the next scan
        batch_id = batch.batch_id
        return SubmitBatchOutput(
            batch_id=batch_id,
            jobs=[
                SubmitJobOutput(job_id=j.job_id, state=j.state, domains=j.domains, estimated_usd=j.plan.estimated_usd)
                for j in jobs
            ],
            estimated_usd=estimate.usd,
        )

    async def _batch(self, batch_id: str) -> tuple[BatchRecord, dict[str, JobRecord]]:
        batch = await self.store.load_batch(batch_id)
        if batch is None:
            raise InvalidParams(f"no batch {batch_id!r}")
        found = {job_id: await self.store.load(job_id) for job_id in batch.job_ids}
        return batch, {job_id: job for job_id, job in found.items() if job is not None}

    @tool(read_only=True)
    async def batch_status(self, params: BatchIdInput) -> BatchStatus:
        """A batch's jobs by group (queued, running, paused, done, failed, cancelled), each job's state,
        estimate and cost so far, the batch's cost so far and the training hours still ahead."""
        batch, jobs = await self._batch(params.batch_id)
        return batch_status(batch, jobs)

    @tool(destructive=True, idempotent=True)
    async def cancel_batch(self, params: BatchIdInput) -> BatchStatus:
        """Cancel every job of a batch that has not ended; queued ones never start."""
        batch, jobs = await self._batch(params.batch_id)
        skipped = []
        for job in jobs.values():
            if job.state in TERMINAL_STATES:
                skipped.append(f"{job.job_id} ({job.spec.target}) already {job.state}")
                continue
            await self._cancel(job)
        batch, jobs = await self._batch(params.batch_id)
        return batch_status(batch, jobs, skipped)

    @tool(idempotent=True)
    async def resume_batch(self, params: BatchIdInput) -> BatchStatus:
        """Queue every failed or budget-paused job of a batch again, from its first unfinished step."""
        batch, jobs = await self._batch(params.batch_id)
        await self._check_budget_to_resume()
        skipped = []
        for job in jobs.values():
            if job.state not in ("failed", "paused_budget"):
                skipped.append(f"{job.job_id} ({job.spec.target}) is {job.state}")
                continue
            if not await self._requeue(job.job_id):
                skipped.append(f"{job.job_id} ({job.spec.target}) is being changed by another Conductor")
        await self._adopt_orphans()
        batch, jobs = await self._batch(params.batch_id)
        return batch_status(batch, jobs, skipped)

    @tool(read_only=True)
    async def job_status(self, params: JobIdInput) -> JobRecord:
        """A job's state, plan and every step's record (attempts, timing, outputs, errors)."""
        return await self._job(params.job_id)

    @tool(read_only=True)
    async def list_jobs(self, params: ListJobsInput) -> ListJobsOutput:
        """Jobs, newest first, optionally only those in one state or for one target."""
        jobs = [
            _summary(j)
            for j in await self.store.all()
            if (params.state is None or j.state == params.state)
            and (params.target in (None, j.spec.target))
            and (params.batch_id in (None, j.batch_id))
        ]
        return ListJobsOutput(jobs=jobs[: params.limit])

    @tool(destructive=True, idempotent=True)
    async def cancel_job(self, params: JobIdInput) -> JobSummary:
        """Cancel a job: it stops before its next step (a running step's result is not used)."""
        job = await self._job(params.job_id)
        if job.state in TERMINAL_STATES:
            if job.state == "cancelled":
                return _summary(job)
            raise InvalidParams(f"job {job.job_id} already ended ({job.state})")
        await self._cancel(job)
        return _summary(job)

    @contextlib.asynccontextmanager
    async def _held(self, job_id: str) -> AsyncIterator[JobRecord | None]:
        """The job as it is now, while this Conductor's scan waits and the job's lease is ours; ``None``
        when a driver has it (here or on another Conductor) or it is gone."""
        async with self._scan_lock:
            if job_id in self._driving or not await self.store.acquire(job_id, self._owner):
                yield None
                return
            try:
                yield await self.store.load(job_id)
            finally:
                await self.store.release(job_id, self._owner)

    async def _cancel(self, job: JobRecord) -> None:
        """Ask the job's driver to stop; a job nobody drives (paused, or queued in a batch) ends here."""
        await self.store.request_cancel(job.job_id)
        async with self._held(job.job_id) as current:
            if current is not None and current.state in ("paused_budget", "planned"):
                current.state, current.error = "cancelled", "cancelled by request"
                current.finished_at = current.updated_at = time.time()
                await self.store.save(current)
                job.state = current.state

    async def _requeue(self, job_id: str) -> bool:
        """A failed or paused batch job back in its batch's queue, from its first unfinished step."""
        if (released := self._driving.get(job_id)) is not None:
            with anyio.move_on_after(LEASE_MS / 1000):
                await released.wait()  # its driver here recorded the end and is letting go of it
        async with self._held(job_id) as job:
            if job is None:
                return False
            if job.state in ("failed", "paused_budget"):  # else changed meanwhile (resumed elsewhere)
                self._reset_unfinished(job)
                job.state = "planned"  # queued again: it waits for a slot of its batch
                await self.store.save(job)
            return True

    @tool(idempotent=True)
    async def resume_job(self, params: JobIdInput) -> JobSummary:
        """Continue a failed or budget-paused job from its first unfinished step."""
        job = await self._job(params.job_id)
        if job.state not in ("failed", "paused_budget"):
            raise InvalidParams(f"job {job.job_id} is {job.state}; only failed or paused_budget jobs resume")
        await self._check_budget_to_resume()
        if job.batch_id is not None:  # back in its batch's queue, not past it
            if not await self._requeue(job.job_id):
                raise ToolError(f"job {job.job_id} is being changed by another Conductor; try again")
            await self._adopt_orphans()
            return _summary(await self._job(job.job_id))
        if not await self.store.acquire(job.job_id, self._owner):
            raise ToolError(f"job {job.job_id} is being changed by another Conductor; try again")
        job = await self._job(job.job_id)  # as it is now that we hold it
        if job.state not in ("failed", "paused_budget"):
            return _summary(job)  # resumed meanwhile
        first = self._reset_unfinished(job)
        job.state = first
        await self.store.save(job)
        self.log.info("job resumed", job=job.job_id, step=first)
        self._start(job)
        return _summary(job)

    async def _check_budget_to_resume(self) -> None:
        budget = await tools.BUDGET_STATUS.call(self.ctx.client, BudgetStatusInput())
        if budget.stopped:
            spent = ", ".join(f"{p.period} ${p.spent_usd:.2f} of ${p.limit_usd:.2f}" for p in budget.periods)
            raise ToolError(f"no budget to resume with ({spent}); raise a budget with cost_monitor.set_budget")

    @staticmethod
    def _reset_unfinished(job: JobRecord) -> StepName:
        """Unfinished steps back to pending with fresh attempts; returns the first of them."""
        for step in job.steps:
            if step.status != "done":
                step.status, step.error, step.attempt_base = "pending", None, step.attempts
        job.error, job.finished_at, job.updated_at = None, None, time.time()
        return next(s.name for s in job.steps if s.status != "done")

    @tool(read_only=True)
    async def job_report(self, params: JobIdInput) -> JobReport:
        """What a job produced and what it took: files with sizes and sha256, data pass rate,
        perplexity base vs adapted, QA score, seconds and dollars per stage."""
        settings = self.ctx.settings
        return build_report(await self._job(params.job_id), settings.models_dir, settings.data_dir)

    @tool(read_only=True)
    async def list_domains(self, params: ListDomainsInput) -> ListDomainsOutput:
        """List the trainable domains, optionally of one category, with their quality targets."""
        if params.category is None:
            domains = list(self.ctx.catalog.domains.values())
        else:
            category = self.ctx.catalog.category(params.category)
            domains = [self.ctx.catalog.domains[d] for d in category.domains]
        return ListDomainsOutput(domains=[_info(d) for d in domains], categories=list(self.ctx.catalog.categories))

    @tool(read_only=True)
    async def describe_domain(self, params: DescribeDomainInput) -> DomainInfo:
        """Describe one domain; an unknown name fails with the closest valid names."""
        return _info(self.ctx.catalog.domain(params.name))
