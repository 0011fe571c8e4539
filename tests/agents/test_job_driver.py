"""The JobDriver on its own: a job record driven through fake agents on an in-memory bus.

No models run: each fake answers with what a real run recorded (``fake_agents``), so a job takes
a fraction of a second, and failures are scripted per tool.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import pytest
from structlog.testing import capture_logs

import agents.conductor.driver as driver_module
from agents.conductor.driver import JobDriver, LeaseLost
from agents.conductor.job_store import JobStore
from agents.conductor.report import build_report
from agents.conductor.settings import JobSettings, load_job_settings
from agents.conductor.steps import CONVERT, DATA, DATA_QA, DEPLOY, KNOWLEDGE_TRANSFER, MODEL_QA, PIPELINE, TRAIN
from protocol import InvalidParams, JobEvent, ToolModel, Unavailable, new_id
from protocol.agents.conductor import STEPS, JobRecord, StepRecord, WarmStartSkipped
from protocol.agents.cost_monitor import RecordUsageInput, TokenUsage
from protocol.agents.data_generation import CombineInput, GenerateInput
from protocol.agents.gguf_creation import CreateGgufInput, DeployInput
from protocol.agents.gpu_optimization import TrainInput
from protocol.agents.knowledge_transfer import RegisterDomainInput
from protocol.agents.quality_assurance import ValidateModelInput
from runtime import Agent, AgentHost, EmbeddedSwarm, Settings, ToolError, load_catalog, open_swarm
from tests.agents.fake_agents import (
    FAKES,
    USD_PER_STEP,
    FakeCostMonitor,
    FakeGpuOptimization,
    FakeKnowledgeTransfer,
    Script,
    recorded_job,
)

pytestmark = pytest.mark.anyio

OWNER = "conductor-test/run1"
SETTINGS = load_job_settings().model_copy(update={"backoff_s": 0.0, "budget_check_s": 0.05})


@pytest.fixture(autouse=True)
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "WATCH_INTERVAL_S", 0.02)


@dataclass
class Harness:
    swarm: EmbeddedSwarm
    store: JobStore
    events: list[JobEvent] = field(default_factory=list)

    def driver(self, job: JobRecord, settings: JobSettings = SETTINGS) -> JobDriver:
        async def publish(event: JobEvent) -> None:
            self.events.append(event)

        return JobDriver(
            job,
            store=self.store,
            client=self.swarm.client,
            catalog=load_catalog(),
            settings=settings,
            owner=OWNER,
            publish=publish,
        )

    async def drive(self, job: JobRecord, settings: JobSettings = SETTINGS) -> JobRecord:
        """Store the job, take its lease and run it to its end."""
        await self.store.create(job)
        assert await self.store.acquire(job.job_id, OWNER)
        with anyio.fail_after(20):
            return await self.driver(job, settings).run()

    def of(self, kind: str, step: str | None = None) -> list[JobEvent]:
        return [e for e in self.events if e.kind == kind and (step is None or e.step == step)]

    def start(self, tg: anyio.abc.TaskGroup, job: JobRecord) -> list[JobRecord]:
        """Drive ``job`` in the background; the returned list gets the job once its run ends."""
        ended: list[JobRecord] = []

        async def drive() -> None:
            ended.append(await self.drive(job))

        tg.start_soon(drive)
        return ended

    async def until(self, kind: str, step: str) -> None:
        """Wait for the job's first event of ``kind`` for ``step``."""
        with anyio.fail_after(10):
            while not self.of(kind, step):
                await anyio.sleep(0.01)


@contextlib.asynccontextmanager
async def harness(settings: Settings, agents: list[type[Agent]] = FAKES) -> AsyncIterator[Harness]:
    async with open_swarm(settings, agents) as swarm:
        yield Harness(swarm, JobStore(swarm.host.records, lease_ms=60_000))


def new_job(done: JobRecord, **spec: object) -> JobRecord:
    """A job as submit_job records it, with the spec and plan of a recorded one."""
    now = time.time()
    return JobRecord(
        job_id=new_id(),
        spec=done.spec.model_copy(update=spec),
        domains=done.domains,
        plan=done.plan,
        state="planned",
        steps=[StepRecord(name=s) for s in STEPS],
        created_at=now,
        updated_at=now,
    )


def asked(script: Script, tool: str, model: type[ToolModel]) -> list[ToolModel]:
    arguments = script.arguments(tool)
    assert all(isinstance(a, model) for a in arguments)
    return arguments


def worked(script: Script) -> list[str]:
    """The tools called, but for usage reports."""
    return [t for t in script.tools() if t != "record_usage"]


async def test_a_domain_job_runs_every_step_and_records_typed_outputs(settings: Settings, script: Script) -> None:
    async with harness(settings) as h:
        job = await h.drive(new_job(script.done))
    assert job.state == "done", job.error
    assert [(s.name, s.status, s.attempts) for s in job.steps] == [(s, "done", 1) for s in STEPS]
    assert worked(script) == ["generate", "recommend", "train", "create_gguf", "validate_model", "deploy", "register"]
    for step in PIPELINE:
        assert step.read(job) == step.read(script.done)  # what the agents answered, read back typed

    (train,) = asked(script, "train", TrainInput)
    assert isinstance(train, TrainInput) and train.dataset == DATA.read(job).dataset and train.warm_start is None
    (convert,) = asked(script, "create_gguf", CreateGgufInput)
    assert isinstance(convert, CreateGgufInput) and convert.training == TRAIN.read(job).metrics
    assert convert.data_stats == DATA.read(job).stats.model_dump(mode="json")
    (deploy,) = asked(script, "deploy", DeployInput)
    assert isinstance(deploy, DeployInput) and deploy.job_id == job.job_id
    assert deploy.qa_report == MODEL_QA.read(job).models[0].report_artifact
    (register,) = asked(script, "register", RegisterDomainInput)
    assert isinstance(register, RegisterDomainInput) and register.loss_curve == TRAIN.read(job).metrics.loss_curve
    model_id = CONVERT.read(job).models[0].model_id
    keys = {a.tool: a.key for a in script.asked}
    assert keys["train"] == f"{job.job_id}:train:1" and keys["deploy"] == f"{job.job_id}:deploy:1:{model_id}"

    usage = {s.name: s.usd for s in job.steps}
    assert usage == {s: (0.0 if s == "data_qa" else USD_PER_STEP) for s in STEPS}
    assert [e.state for e in h.of("state_changed")] == [*STEPS, "done"] and h.events[-1].terminal
    # The agents' progress, as job events of the step: counts with their measurements, status lines without.
    trained = h.of("progress", "train")
    assert [(e.progress, e.total, e.data["loss"]) for e in trained] == [(1, 3, 3.0), (2, 3, 1.5), (3, 3, 1.0)]
    (converting,) = h.of("progress", "convert")
    assert converting.progress is None and converting.message == "merging"
    assert [e.total for e in h.of("progress", "data")] == [40]
    (train_finished,) = h.of("step_finished", "train")
    assert h.events.index(trained[-1]) < h.events.index(train_finished)  # progress first, then the result


async def test_a_category_job_generates_per_domain_combines_and_skips_warm_starts(
    settings: Settings, script: Script
) -> None:
    script.done = recorded_job("category_job_done")
    async with harness(settings) as h:
        job = await h.drive(new_job(script.done))
    assert job.state == "done", job.error
    assert worked(script) == ["generate", "generate", "combine", "train", "create_gguf", "validate_model", "deploy"]
    assert [a.domain for a in asked(script, "generate", GenerateInput) if isinstance(a, GenerateInput)] == job.domains
    assert [a.key for a in script.asked if a.tool == "generate"] == [f"{job.job_id}:data:1:{d}" for d in job.domains]
    (combine,) = asked(script, "combine", CombineInput)
    assert isinstance(combine, CombineInput) and [p.domain for p in combine.parts] == job.domains
    data = DATA.read(job)
    assert sorted(data.domains) == sorted(job.domains) and data.samples_per_domain == {d: 19 for d in job.domains}
    skipped = KNOWLEDGE_TRANSFER.read(job)
    assert isinstance(skipped, WarmStartSkipped) and skipped.skipped == "warm starts are for domain jobs"
    assert [e.data.get("part") for e in h.of("progress", "data")] == job.domains
    assert job.step("knowledge_transfer").usd == 0.0


async def test_a_failing_step_is_retried_with_backoff_and_a_resumed_job_counts_its_retries_afresh(
    settings: Settings, script: Script
) -> None:
    script.failures["train"] = [Unavailable("the GPU host is restarting") for _ in range(4)]
    backoff = SETTINGS.model_copy(update={"backoff_s": 0.01})
    async with harness(settings) as h:
        with capture_logs() as logs:
            failed = await h.drive(new_job(script.done), backoff)
        assert failed.state == "failed" and failed.error
        assert failed.error.startswith("train failed after 3 attempts: ") and "restarting" in failed.error
        assert failed.step("train").attempts == 3 and failed.step("convert").attempts == 0
        assert [entry["retry_in_s"] for entry in logs if "retry_in_s" in entry] == [0.01, 0.02]
        assert [e.message for e in h.of("log", "train")] == [
            f"train attempt {n} failed: the GPU host is restarting" for n in (1, 2)
        ]

        # What resume_job does: unfinished steps start over, their retries counted from here.
        for step in failed.steps:
            if step.status != "done":
                step.status, step.error, step.attempt_base = "pending", None, step.attempts
        failed.state, failed.error, failed.finished_at = "train", None, None
        with anyio.fail_after(20):
            done = await h.driver(failed, backoff).run()
    assert done.state == "done", done.error
    assert done.step("train").attempts == 5  # the fourth failed, the fifth trained
    assert done.step("data").attempts == 1


async def test_a_step_its_agent_refuses_fails_the_job_without_retries(settings: Settings, script: Script) -> None:
    script.failures["create_gguf"] = [InvalidParams("the adapter is not a LoRA file")]
    async with harness(settings) as h:
        job = await h.drive(new_job(script.done))
    assert job.state == "failed"
    assert job.error == "gguf_creation.create_gguf refused the step: the adapter is not a LoRA file"
    convert = job.step("convert")
    assert (convert.status, convert.attempts, convert.error) == ("failed", 1, job.error)
    assert "validate_model" not in script.tools()


async def test_a_model_that_fails_qa_fails_the_job_with_its_recorded_reasons(
    settings: Settings, script: Script
) -> None:
    script.qa_passed = False
    async with harness(settings) as h:
        job = await h.drive(new_job(script.done))
    assert job.state == "failed"
    model_id = CONVERT.read(job).models[0].model_id
    assert job.error == f"model QA did not pass: {model_id} scored 40.0%: replies are gibberish"
    qa = job.step("model_qa")
    assert qa.status == "failed" and qa.error == job.error and qa.usd == USD_PER_STEP
    assert not MODEL_QA.read(job).models[0].report.passed
    assert job.step("deploy").attempts == 0 and "deploy" not in script.tools()


async def test_a_cancel_request_stops_the_running_step_and_the_agent(settings: Settings, script: Script) -> None:
    script.hold_training = True
    async with harness(settings) as h, anyio.create_task_group() as tg:
        job = new_job(script.done)
        ended: list[JobRecord] = []

        async def drive() -> None:
            ended.append(await h.drive(job))

        tg.start_soon(drive)
        with anyio.fail_after(10):
            await script.training.wait()
            await h.store.request_cancel(job.job_id)
    (job,) = ended
    assert job.state == "cancelled" and job.error == "cancelled by request"
    train = job.step("train")
    assert (train.status, train.error) == ("failed", "cancelled by request")
    assert await h.swarm.bus.cancel_requested("gpu_optimization", f"{job.job_id}:train:1")
    assert "create_gguf" not in script.tools()


async def test_a_spent_budget_pauses_the_job_before_a_step_or_during_one(settings: Settings, script: Script) -> None:
    script.budget_stopped = True
    async with harness(settings) as h:
        before = await h.drive(new_job(script.done))
        assert before.state == "paused_budget" and before.step("data").attempts == 0
        assert h.events[-1].terminal and not script.tools()

        script.budget_stopped, script.hold_training = False, True
        async with anyio.create_task_group() as tg:
            job = new_job(script.done)
            ended: list[JobRecord] = []

            async def drive() -> None:
                ended.append(await h.drive(job))

            tg.start_soon(drive)
            with anyio.fail_after(10):
                await script.training.wait()
            script.budget_stopped = True
        (paused,) = ended
        assert paused.state == "paused_budget" and "budget" in (paused.error or "")
        assert paused.step("train").status == "failed"
        assert await h.swarm.bus.cancel_requested("gpu_optimization", f"{job.job_id}:train:1")


async def test_a_lost_lease_stops_driving_without_touching_the_record(settings: Settings, script: Script) -> None:
    script.hold_training = True
    async with harness(settings) as h:
        job = new_job(script.done)
        raised: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def drive() -> None:
                try:
                    await h.drive(job)
                except LeaseLost as exc:
                    raised.append(exc)

            tg.start_soon(drive)
            with anyio.fail_after(10):
                await script.training.wait()
            # The same Conductor instance restarted takes its jobs back from its dead run.
            assert await h.store.acquire(job.job_id, "conductor-test/run2")
        assert len(raised) == 1
        stored = await h.store.load(job.job_id)
        script.hold_training = False
    assert stored is not None and stored.state == "train" and stored.step("train").status == "running"
    assert not await h.swarm.bus.cancel_requested("gpu_optimization", f"{job.job_id}:train:1")


async def test_a_record_stored_mid_job_by_the_previous_version_resumes_where_it_stopped(
    settings: Settings, script: Script
) -> None:
    stored = recorded_job("domain_job_convert_pending")  # saved by the Conductor before the step table
    assert [s.name for s in stored.steps if s.status == "done"] == ["data", "data_qa", "knowledge_transfer", "train"]
    convert_attempt = stored.step("convert").attempts
    async with harness(settings) as h:
        job = await h.drive(stored)
    assert job.state == "done", job.error
    assert worked(script) == ["create_gguf", "validate_model", "deploy", "register"]
    (convert,) = asked(script, "create_gguf", CreateGgufInput)
    assert isinstance(convert, CreateGgufInput)
    assert convert.adapter == TRAIN.read(stored).adapter and convert.training == TRAIN.read(stored).metrics
    assert convert.data_stats == DATA.read(stored).stats.model_dump(mode="json")
    # A step that was running when the record was saved is re-sent under its attempt's key.
    attempt = max(convert_attempt, 1)
    assert [a.key for a in script.asked if a.tool == "create_gguf"] == [f"{job.job_id}:convert:{attempt}"]
    (qa,) = asked(script, "validate_model", ValidateModelInput)
    assert isinstance(qa, ValidateModelInput) and qa.eval_dataset == DATA.read(stored).eval_dataset
    assert DATA_QA.read(job) == DATA_QA.read(stored) and DEPLOY.read(job).models[0].entry.version


async def test_a_step_waits_for_its_agent_without_spending_attempts_and_goes_on_when_it_is_back(
    settings: Settings, script: Script
) -> None:
    """A GPU host restarting for a while: the step waits (visible in the record and the events)."""
    without_gpu = [a for a in FAKES if a is not FakeGpuOptimization]
    async with harness(settings, without_gpu) as h, anyio.create_task_group() as tg:
        job = new_job(script.done)
        ended = h.start(tg, job)
        await h.until("waiting", "train")
        stored = await h.store.load(job.job_id)
        assert stored is not None and stored.step("train").waiting_for == "gpu_optimization"
        assert h.of("waiting", "train")[0].message == "waiting for gpu_optimization"
        gpu = AgentHost(h.swarm.bus, [FakeGpuOptimization], settings=settings)
        tg.start_soon(gpu.run)
        with anyio.fail_after(20):
            while not ended:
                await anyio.sleep(0.01)
        gpu.stop()
    (done,) = ended
    assert done.state == "done", done.error
    assert done.step("train").attempts == 1 and done.step("train").waiting_for is None
    assert any("gpu_optimization is live again" in (e.message or "") for e in h.of("log", "train"))


async def test_a_step_whose_agent_never_comes_fails_at_the_horizon_naming_it(
    settings: Settings, script: Script
) -> None:
    horizon = SETTINGS.model_copy(update={"agent_wait_s": {"default": 0.5}})
    without_gpu = [a for a in FAKES if a is not FakeGpuOptimization]
    async with harness(settings, without_gpu) as h:
        started = time.monotonic()
        job = await h.drive(new_job(script.done), horizon)
    assert time.monotonic() - started >= 0.5
    assert job.state == "failed"
    assert "train: no live instance of agent 'gpu_optimization' for" in (job.error or "")
    assert "resume_job continues the job" in (job.error or "")
    train = job.step("train")
    assert (train.status, train.attempts, train.waiting_for) == ("failed", 1, None)
    assert "train" not in script.tools()


@pytest.mark.parametrize("stop", ["cancel", "budget", "failover"])
async def test_cancel_budget_pause_and_failover_end_a_step_that_waits_for_its_agent(
    settings: Settings, script: Script, stop: str
) -> None:
    """The wait runs beside the job's watch: what stops a running step stops a waiting one."""
    without_gpu = [a for a in FAKES if a is not FakeGpuOptimization]
    async with harness(settings, without_gpu) as h:
        job = new_job(script.done)
        ended: list[JobRecord | LeaseLost] = []
        async with anyio.create_task_group() as tg:

            async def drive() -> None:
                try:
                    ended.append(await h.drive(job))
                except LeaseLost as exc:
                    ended.append(exc)

            tg.start_soon(drive)
            await h.until("waiting", "train")
            if stop == "cancel":
                await h.store.request_cancel(job.job_id)
            elif stop == "budget":
                script.budget_stopped = True
            else:  # another Conductor instance takes the job over
                assert await h.store.acquire(job.job_id, "conductor-test/run2")
        stored = await h.store.load(job.job_id)
    assert stored is not None and "train" not in script.tools()
    (end,) = ended
    if stop == "failover":
        # The new owner drives on from the record as it was: still waiting at the train step.
        assert isinstance(end, LeaseLost) and stored.state == "train"
        assert stored.step("train").waiting_for == "gpu_optimization"
        return
    assert isinstance(end, JobRecord)
    expected = {"cancel": "cancelled", "budget": "paused_budget"}[stop]
    assert (end.state, stored.state) == (expected, expected)
    train = end.step("train")
    assert train.status == "failed" and train.waiting_for is None and train.attempts == 1


async def test_usage_and_the_warm_start_index_wait_in_the_inboxes_of_agents_that_are_away(
    settings: Settings, script: Script
) -> None:
    """Bookkeeping never holds the job up, and is not lost: it runs once its agent is back."""
    kept = [a for a in FAKES if a not in (FakeCostMonitor, FakeKnowledgeTransfer)]
    async with harness(settings, kept) as h, anyio.create_task_group() as tg:
        knowledge = AgentHost(h.swarm.bus, [FakeKnowledgeTransfer], settings=settings)
        tg.start_soon(knowledge.run)
        ended = h.start(tg, new_job(script.done))
        await h.until("step_finished", "knowledge_transfer")
        knowledge.stop()  # away from now on: the job's end registers the domain with nobody there
        with anyio.fail_after(20):
            while not ended:
                await anyio.sleep(0.01)
        (done,) = ended
        assert done.state == "done", done.error
        assert "record_usage" not in script.tools() and "register" not in script.tools()
        # No reply, no price yet: the record says so (the ledger has the entries once the agent is back).
        finished = [s.name for s in done.steps if s.status == "done" and s.agent not in (None, "conductor")]
        assert USD_PER_STEP and all(s.usd == 0.0 for s in done.steps)
        stages = build_report(done, settings.models_dir).stages
        assert finished and [s.step for s in stages if s.usd_pending] == finished

        back = AgentHost(h.swarm.bus, [FakeCostMonitor, FakeKnowledgeTransfer], settings=settings)
        tg.start_soon(back.run)
        with anyio.fail_after(20):
            while len(script.arguments("record_usage")) < len(finished) or "register" not in script.tools():
                await anyio.sleep(0.01)
        back.stop()
    reported = [str(a.key) for a in script.asked if a.tool == "record_usage"]
    assert sorted(reported) == sorted(f"usage:{done.job_id}:{name}:1" for name in finished)
    assert [a.key for a in script.asked if a.tool == "register"] == [f"{done.job_id}:register"]


async def test_tokens_a_failed_teacher_generation_paid_for_are_priced_on_its_attempt(
    settings: Settings, script: Script
) -> None:
    """The retry reuses the answers it paid for without paying again: the failed attempt's entry holds them."""
    paid = {"requests": 5, "prompt_tokens": 1000, "completion_tokens": 400, "usd": 0.0026}
    gone = ToolError("teacher endpoint failed: ConnectError", data={"step": "generate", "teacher_usage": paid})
    script.failures["generate"] = [gone]
    async with harness(settings) as h:
        job = await h.drive(new_job(script.done))
    assert job.state == "done", job.error
    assert job.step("data").attempts == 2
    reports = [a for a in asked(script, "record_usage", RecordUsageInput) if isinstance(a, RecordUsageInput)]
    data = [(r.attempt, r.tokens) for r in reports if r.step == "data"]
    assert data == [(1, TokenUsage(prompt_tokens=1000, completion_tokens=400, usd=0.0026)), (2, None)]


async def test_training_is_priced_as_the_host_that_ran_it_not_as_the_plan_guessed(
    settings: Settings, script: Script
) -> None:
    """GPU replicas may be rented apiece: the plan asked one, the training step says who trained."""
    trained = TRAIN.read(script.done)
    rented = trained.plan.device.model_copy(update={"provider": "lambda_labs", "gpu": "H100"})
    output = trained.model_copy(update={"plan": trained.plan.model_copy(update={"device": rented})})
    script.done.step("train").output = TRAIN.dump(output)
    async with harness(settings) as h:
        job = await h.drive(new_job(script.done))
    assert job.state == "done" and job.plan.provider == "local"
    usage = {u.step: (u.provider, u.gpu, u.device) for u in asked(script, "record_usage", RecordUsageInput)}  # type: ignore[attr-defined]
    assert usage["train"] == ("lambda_labs", "H100", rented.name)
    assert usage["data"] == ("local", None, "cpu")
