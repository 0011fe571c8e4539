"""The Conductor's pure parts: settings, the step table, the data gate, and reading stored records."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.conductor.job_store import JobStore
from agents.conductor.planning import _seconds_per_step
from agents.conductor.report import build_report
from agents.conductor.settings import load_job_settings
from agents.conductor.steps import (
    CONVERT,
    DATA,
    DATA_QA,
    DEPLOY,
    KNOWLEDGE_TRANSFER,
    MODEL_QA,
    PIPELINE,
    TRAIN,
    ToolStep,
    registration,
)
from bus import MemoryTransport
from protocol.agents.conductor import STEPS
from protocol.agents.data_generation import CombineInput, CombineOutput, GenerateOutput
from protocol.agents.gguf_creation import CreateGgufInput, DeployInput
from protocol.agents.gpu_optimization import TrainInput
from protocol.agents.knowledge_transfer import Recommendation
from protocol.agents.quality_assurance import ValidateModelInput
from runtime import CatalogError, RecordStore, TransportRecords, load_catalog
from tests.agents.fake_agents import recorded_job


def test_the_table_lists_the_pipeline_in_order() -> None:
    assert tuple(step.name for step in PIPELINE) == STEPS


def test_each_step_calls_its_agent_with_what_the_steps_before_it_recorded() -> None:
    job = recorded_job("domain_job_done")
    tools = {s.name: (s.tool.agent, s.tool.name) for s in PIPELINE if isinstance(s, ToolStep)}
    assert tools == {
        "data": ("data_generation", "generate"),
        "knowledge_transfer": ("knowledge_transfer", "recommend"),
        "train": ("gpu_optimization", "train"),
        "convert": ("gguf_creation", "create_gguf"),
        "model_qa": ("quality_assurance", "validate_model"),
        "deploy": ("gguf_creation", "deploy"),
    }
    (data,) = DATA.calls(job).values()
    assert (data.domain, data.count, data.crisis_fraction) == ("general_health", 40, 0.12)
    train = TRAIN.calls(job)[""]
    assert isinstance(train, TrainInput)
    assert train.dataset == DATA.read(job).dataset and train.training.max_steps == 6
    assert train.base_model == job.spec.base_model and train.warm_start is None  # nothing similar was trained
    convert = CONVERT.calls(job)[""]
    assert isinstance(convert, CreateGgufInput) and convert.training == TRAIN.read(job).metrics
    (model_id,) = MODEL_QA.calls(job)
    qa = MODEL_QA.calls(job)[model_id]
    assert isinstance(qa, ValidateModelInput) and qa.metadata == CONVERT.read(job).models[0].metadata
    deploy = DEPLOY.calls(job)[model_id]
    assert isinstance(deploy, DeployInput) and deploy.job_id == job.job_id and deploy.lane == "production"
    assert deploy.qa_report == MODEL_QA.read(job).models[0].report_artifact
    assert TRAIN.timeout_s(load_job_settings()) == load_job_settings().step_timeout_s["train"]
    registered = registration(job)
    assert registered.steps == TRAIN.read(job).metrics.steps and registered.warm_started_from is None


def test_a_warm_start_trains_from_the_recommended_adapter_and_registers_where_it_came_from() -> None:
    job = recorded_job("domain_job_done")
    adapter = TRAIN.read(job).adapter
    recommendation = Recommendation(
        domain="mental_health", similarity=0.9, adapter=adapter, threshold=0.5, candidates=[]
    )
    job.step("knowledge_transfer").output = KNOWLEDGE_TRANSFER.dump(recommendation)
    assert TRAIN.calls(job)[""].warm_start == adapter
    assert registration(job).warm_started_from == "mental_health"
    cold = job.model_copy(update={"spec": job.spec.model_copy(update={"warm_start": False})})
    assert TRAIN.calls(cold)[""].warm_start is None and registration(cold).warm_started_from is None


def test_the_data_gate_names_what_is_wrong() -> None:
    job, settings, catalog = recorded_job("domain_job_done"), load_job_settings(), load_catalog()
    assert DATA_QA.decide(job, settings, catalog) == DATA_QA.read(job)
    data = DATA.read(job)
    short = data.model_copy(
        update={
            "reached_target": False,
            "kept": 12,
            "pass_rate": 0.4,
            "stats": data.stats.model_copy(update={"crisis": 0}),
        }
    )
    job.step("data").output = DATA.dump(short)
    gate = DATA_QA.decide(job, settings, catalog)
    assert not gate.passed
    assert gate.reasons == [
        "only 12 of 40 conversations passed QA",
        "QA pass rate 0.40 is below 0.70",
        "a crisis-sensitive domain's data has no crisis conversations",
    ]
    assert DATA_QA.verdict(gate) == "data QA did not pass: " + "; ".join(gate.reasons)


def test_training_is_timed_from_the_newest_job_whose_record_reads() -> None:
    newest, older = recorded_job("category_job_done"), recorded_job("domain_job_done")
    newest.step("train").output["metrics"].pop("steps")  # as an older version might have recorded it
    device, seconds = older.plan.device, older.step("train").seconds
    assert seconds and _seconds_per_step([newest, older], device) == seconds / TRAIN.read(older).metrics.steps
    assert _seconds_per_step([newest, older], "another device") is None


def test_a_broken_jobs_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text("retries: 0\n")
    with pytest.raises(CatalogError, match=r"jobs.yaml is invalid: retries"):
        load_job_settings(tmp_path)


def test_a_category_job_generates_per_domain_then_combines_and_checks_every_model() -> None:
    job = recorded_job("category_job_done")
    assert job.domains == ["financial", "legal"]
    calls = DATA.calls(job)
    assert [(part, a.domain) for part, a in calls.items()] == [("financial", "financial"), ("legal", "legal")]
    generated = GenerateOutput.model_validate(DATA.read(job).model_dump(include=set(GenerateOutput.model_fields)))
    parts = {
        "legal": generated.model_copy(update={"kept": 40, "generated": 40, "pass_rate": 1.0, "rounds": 1}),
        "financial": generated.model_copy(
            update={"kept": 30, "generated": 50, "pass_rate": 0.6, "rounds": 3, "reached_target": False}
        ),
    }
    parts["legal"].rejections, parts["financial"].rejections = {}, {"near_duplicate": 5, "length": 15}
    assert DATA.closing is not None
    closing = DATA.closing.arguments(job, parts)
    assert isinstance(closing, CombineInput) and closing.scope == "category"
    assert [p.domain for p in closing.parts] == ["financial", "legal"]
    combine = CombineOutput.model_validate(DATA.read(job).model_dump(include=set(CombineOutput.model_fields)))
    combined = DATA.closing.record(parts, combine)
    assert (combined.kept, combined.generated, combined.rounds) == (70, 90, 3)
    assert combined.pass_rate == 70 / 90 and combined.near_duplicate_rate == 5 / 90
    assert not combined.reached_target and combined.domains["legal"].reached_target
    job.step("data").output = DATA.dump(combined)
    gate = DATA_QA.decide(job, load_job_settings(), load_catalog())
    assert gate.reasons == ["fewer than 40 conversations passed QA for financial"]
    assert list(MODEL_QA.calls(job)) == [m.model_id for m in CONVERT.read(job).models]


def test_stored_records_read_back_typed_and_a_running_steps_parts_are_no_result() -> None:
    job = recorded_job("category_job_done")
    data = DATA.read(job)
    assert sorted(data.domains) == ["financial", "legal"] and data.samples_per_domain
    assert KNOWLEDGE_TRANSFER.read(job).domain is None
    report = build_report(job, Path("/models"))
    (model,) = report.models
    deployed = DEPLOY.read(job).models[0]
    assert model.model_id == deployed.model_id and model.deployed_version == deployed.entry.version
    assert model.qa_passed and report.data_pass_rate == data.pass_rate
    job.step("convert").output = {"parts": {}}
    job.step("model_qa").output, job.step("deploy").output = {}, {}
    assert CONVERT.result(job) is None and build_report(job, Path("/models")).models == []


@pytest.mark.anyio
async def test_a_restarted_conductor_takes_back_its_dead_runs_leases_and_no_one_elses(
    memory_url: str, namespace: str
) -> None:
    store = JobStore(RecordStore(TransportRecords(MemoryTransport(memory_url), namespace)), lease_ms=60_000)
    assert await store.acquire("j", "cond-a/run1")
    assert not await store.acquire("j", "cond-b/run1")  # a live lease of another instance is respected
    assert await store.acquire("j", "cond-a/run2")  # cond-a restarted under its stable id
    assert not await store.renew("j", "cond-a/run1")  # the dead run could not renew it any more
    assert not await store.acquire("j", "cond-b/run2")


def test_a_domain_model_is_built_to_send_its_trained_system_prompt_and_a_category_model_is_not() -> None:
    prompts = {"You are MeeTARA, a caring guide.": 30, "You are MeeTARA, a warm guide.": 12}
    for name, expected in (("domain_job_done", "You are MeeTARA, a caring guide."), ("category_job_done", None)):
        job = recorded_job(name)
        data = DATA.read(job)
        stats = data.stats.model_copy(update={"system_prompts": prompts})
        job.step("data").output = DATA.dump(data.model_copy(update={"stats": stats}))
        convert = CONVERT.calls(job)[""]
        assert isinstance(convert, CreateGgufInput) and convert.system_prompt == expected, name
