"""Batches: one job per domain, priced as a whole, run a few at a time, followed, cancelled and resumed as one."""

from __future__ import annotations

from typing import ClassVar

import anyio
import pytest

import agents.conductor.agent as conductor_module
import agents.conductor.driver as driver_module
from agents.conductor import ConductorAgent
from protocol import InvalidParams
from protocol.agents.conductor import BatchStatus, ListJobsOutput, SubmitBatchOutput
from protocol.agents.gpu_optimization import TrainInput, TrainOutput
from runtime import CallContext, EmbeddedSwarm, Settings, ToolFailed, load_catalog, open_swarm, tool
from tests.agents.fake_agents import FAKES, FakeGpuOptimization, Script

pytestmark = pytest.mark.anyio

AGENTS = [ConductorAgent, *FAKES]
PER_GPU = 2  # configs/jobs.yaml batch_jobs_per_gpu; one (fake) GPU instance is live


@pytest.fixture(autouse=True)
def fast_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conductor_module, "SCAN_INTERVAL_S", 0.05)
    monkeypatch.setattr(driver_module, "WATCH_INTERVAL_S", 0.02)


async def submit(swarm: EmbeddedSwarm, domains: list[str], **job: object) -> SubmitBatchOutput:
    selection = {"domains": domains, "job": job}
    return await swarm.client.call_model("conductor", "submit_batch", selection, SubmitBatchOutput)


async def status(swarm: EmbeddedSwarm, batch_id: str) -> BatchStatus:
    return await swarm.client.call_model("conductor", "batch_status", {"batch_id": batch_id}, BatchStatus)


async def until(swarm: EmbeddedSwarm, batch_id: str, done: object, seen: list[BatchStatus]) -> BatchStatus:
    """Poll the batch until ``done(status)``; every status seen is kept."""
    with anyio.fail_after(60):
        while True:
            seen.append(await status(swarm, batch_id))
            if done(seen[-1]):  # type: ignore[operator]
                return seen[-1]
            await anyio.sleep(0.02)


async def test_a_batch_runs_a_few_jobs_at_a_time_to_the_end_and_adds_up_its_cost(
    settings: Settings, script: Script
) -> None:
    domains = ["general_health", "nutrition", "fitness", "sleep", "programming"]
    script.hold_training = True
    async with open_swarm(settings, AGENTS) as swarm:
        submitted = await submit(swarm, domains, samples=40)
        batch_id = submitted.batch_id
        seen: list[BatchStatus] = []
        held = await until(swarm, batch_id, lambda s: s.counts["running"] == PER_GPU, seen)
        assert held.counts["queued"] == len(domains) - PER_GPU
        # The first two in the order given run; each job is a domain job with the batch's settings.
        assert [j.domain for j in held.jobs if j.group == "running"] == domains[:PER_GPU]
        with anyio.fail_after(30):
            while len(script.arguments("train")) < PER_GPU:
                await anyio.sleep(0.02)
        script.hold_training = False
        final = await until(swarm, batch_id, lambda s: s.counts["done"] == len(domains), seen)
        listed = await swarm.client.call_model("conductor", "list_jobs", {"batch_id": batch_id}, ListJobsOutput)

    assert [j.domain for j in final.jobs] == domains and [o.domains for o in submitted.jobs] == [[d] for d in domains]
    assert max(s.counts["running"] for s in seen) == PER_GPU  # never more at once, all the way through
    assert sorted(j.job_id for j in listed.jobs) == sorted(j.job_id for j in final.jobs)
    assert all(j.batch_id == batch_id for j in listed.jobs)
    assert final.spent_usd == pytest.approx(sum(j.spent_usd for j in final.jobs)) and final.spent_usd > 0
    assert final.remaining_hours == 0
    assert sorted(a.domain for a in script.arguments("generate")) == sorted(domains)  # type: ignore[attr-defined]
    assert {a.count for a in script.arguments("generate")} == {40}  # type: ignore[attr-defined]


async def test_a_cancelled_batch_stops_running_and_queued_jobs_and_resumes_from_where_each_stopped(
    settings: Settings, script: Script
) -> None:
    domains = ["general_health", "nutrition", "fitness"]
    script.hold_training = True
    async with open_swarm(settings, AGENTS) as swarm:
        submitted = await submit(swarm, domains)
        batch_id, seen = submitted.batch_id, []
        with anyio.fail_after(30):
            while len(script.arguments("train")) < PER_GPU:
                await anyio.sleep(0.02)
        cancelled = await swarm.client.call_model("conductor", "cancel_batch", {"batch_id": batch_id}, BatchStatus)
        # The queued job ends at once; the two training stop at their step (by now, or soon).
        assert [j.state for j in cancelled.jobs if j.domain == domains[2]] == ["cancelled"]
        ended = await until(swarm, batch_id, lambda s: s.counts["cancelled"] == len(domains), seen)
        assert ended.counts["running"] == 0 and len(script.arguments("train")) == PER_GPU
        again = await swarm.client.call_model("conductor", "cancel_batch", {"batch_id": batch_id}, BatchStatus)
        assert len(again.skipped) == len(domains) and all("already cancelled" in s for s in again.skipped)
        generated = len(script.arguments("generate"))

        resumed = await swarm.client.call_model("conductor", "resume_batch", {"batch_id": batch_id}, BatchStatus)
        assert len(resumed.skipped) == len(domains)  # cancelled jobs end; only failed or paused ones resume

    assert generated == PER_GPU


async def test_a_failed_batch_job_resumes_with_its_batch_from_its_first_unfinished_step(
    settings: Settings, script: Script
) -> None:
    domains = ["general_health", "nutrition", "fitness"]
    script.qa_passed = False  # every model fails QA: each job fails at model_qa
    async with open_swarm(settings, AGENTS) as swarm:
        submitted = await submit(swarm, domains)
        batch_id, seen = submitted.batch_id, []
        failed = await until(swarm, batch_id, lambda s: s.counts["failed"] == len(domains), seen)
        assert all("quality" in (j.error or "").lower() or "qa" in (j.error or "").lower() for j in failed.jobs), failed
        trained = len(script.arguments("train"))
        script.qa_passed = True
        resumed = await swarm.client.call_model("conductor", "resume_batch", {"batch_id": batch_id}, BatchStatus)
        assert resumed.skipped == []
        final = await until(swarm, batch_id, lambda s: s.counts["done"] == len(domains), seen)

    assert max(s.counts["running"] for s in seen) <= PER_GPU
    assert trained == len(domains) and len(script.arguments("train")) == len(domains)  # not trained again
    assert final.spent_usd > failed.spent_usd


async def test_a_batch_is_priced_whole_and_refused_before_any_job_exists(settings: Settings, script: Script) -> None:
    script.estimate_refused = "the day budget would pass its stop threshold"
    async with open_swarm(settings, AGENTS) as swarm:
        with pytest.raises(ToolFailed, match="batch of 12 jobs refused: the day budget would pass"):
            await swarm.client.call_model("conductor", "submit_batch", {"category": "healthcare"}, SubmitBatchOutput)
        (estimate,) = script.arguments("estimate")
        assert estimate.hours == 0  # type: ignore[attr-defined]  # nothing measured on this device yet
        listed = await swarm.client.call_model("conductor", "list_jobs", {}, ListJobsOutput)
        with pytest.raises(InvalidParams, match="did you mean 'nutrition'"):
            await swarm.client.call("conductor", "submit_batch", {"domains": ["nutriton"]})
        with pytest.raises(InvalidParams, match="exactly one of domains, category or all_domains"):
            await swarm.client.call("conductor", "submit_batch", {"domains": ["sleep"], "all_domains": True})
        with pytest.raises(InvalidParams, match="no batch"):
            await swarm.client.call("conductor", "batch_status", {"batch_id": "0123456789abcdef"})
    assert listed.jobs == []
    assert len(load_catalog().category("healthcare").domains) == 12


class GpuReplica(FakeGpuOptimization):
    """One training at a time, as the real GPU agent; records which instance trained what."""

    concurrency = 1
    trained_by: ClassVar[list[tuple[str, str]]] = []

    @tool(idempotent=True)
    async def train(self, params: TrainInput, ctx: CallContext) -> TrainOutput:
        """Held while the script holds training."""
        self.trained_by.append((self.ctx.instance_id, params.target))
        return await super().train(params, ctx)


@pytest.mark.redis
async def test_two_gpu_replicas_split_a_batch_and_let_twice_as_many_of_its_jobs_run(
    settings_factory,
    redis_url: str,
    script: Script,  # type: ignore[no-untyped-def]
) -> None:
    domains = ["general_health", "nutrition", "fitness", "sleep", "programming", "shopping"]
    others = [a for a in AGENTS if a is not FakeGpuOptimization]
    script.hold_training = True
    GpuReplica.trained_by = []
    async with (
        open_swarm(settings_factory(redis_url, instance_id="gpu-a"), [GpuReplica]),
        open_swarm(settings_factory(redis_url, instance_id="gpu-b"), [GpuReplica]),
        open_swarm(settings_factory(redis_url, instance_id="the-rest"), others) as swarm,
    ):
        submitted = await submit(swarm, domains)
        batch_id, seen = submitted.batch_id, []
        # Two live GPU instances: twice the slots; each instance trains one job at a time.
        held = await until(swarm, batch_id, lambda s: s.counts["running"] == 2 * PER_GPU, seen)
        with anyio.fail_after(30):
            while len(GpuReplica.trained_by) < 2:
                await anyio.sleep(0.02)
        assert {instance for instance, _ in GpuReplica.trained_by} == {"gpu-a", "gpu-b"}
        assert held.counts["queued"] == len(domains) - 2 * PER_GPU
        script.hold_training = False
        await until(swarm, batch_id, lambda s: s.counts["done"] == len(domains), seen)

    assert max(s.counts["running"] for s in seen) == 2 * PER_GPU
    assert sorted(target for _, target in GpuReplica.trained_by) == sorted(domains)
    assert {instance for instance, _ in GpuReplica.trained_by} == {"gpu-a", "gpu-b"}


@pytest.mark.redis
async def test_two_conductors_admit_a_batch_within_its_limit_together(  # type: ignore[no-untyped-def]
    settings_factory, redis_url: str, script: Script
) -> None:
    """Both replicas scan for queued batch jobs; one admits at a time and counts what the other started."""
    domains = ["general_health", "nutrition", "fitness", "sleep", "programming"]
    script.hold_training = True
    others = [a for a in AGENTS if a is not ConductorAgent]
    async with (
        open_swarm(settings_factory(redis_url, instance_id="conductor-a"), [ConductorAgent]),
        open_swarm(settings_factory(redis_url, instance_id="conductor-b"), [ConductorAgent]),
        open_swarm(settings_factory(redis_url, instance_id="the-rest"), others) as swarm,
    ):
        submitted = await submit(swarm, domains)
        batch_id, seen = submitted.batch_id, []
        await until(swarm, batch_id, lambda s: s.counts["running"] == PER_GPU, seen)
        for _ in range(20):  # both replicas scan many times (every 0.05 s) while the two jobs hold
            seen.append(await status(swarm, batch_id))
            await anyio.sleep(0.05)
        script.hold_training = False
        await until(swarm, batch_id, lambda s: s.counts["done"] == len(domains), seen)
    assert max(s.counts["running"] for s in seen) == PER_GPU


async def test_no_batch_job_starts_while_a_budget_is_stopped_and_a_resumed_job_queues_with_its_batch(
    settings: Settings, script: Script
) -> None:
    domains = ["general_health", "nutrition", "fitness"]
    script.budget_stopped = True
    async with open_swarm(settings, AGENTS) as swarm:
        submitted = await submit(swarm, domains)
        batch_id, seen = submitted.batch_id, []
        queued = await status(swarm, batch_id)  # submit ran an admission pass: the budget said no
        assert queued.counts["queued"] == len(domains) and script.arguments("generate") == []
        script.budget_stopped = False
        script.qa_passed = False
        await until(swarm, batch_id, lambda s: s.counts["failed"] == len(domains), seen)
        # A failed batch job resumed on its own goes back to its batch's queue, and on from model QA.
        script.qa_passed = True
        trained = len(script.arguments("train"))
        first = submitted.jobs[0].job_id
        await swarm.client.call("conductor", "resume_job", {"job_id": first})
        final = await until(swarm, batch_id, lambda s: s.counts["done"] == 1 and s.counts["running"] == 0, seen)
    assert [j.job_id for j in final.jobs if j.group == "done"] == [first] and final.counts["failed"] == 2
    assert len(script.arguments("train")) == trained
