"""A job that chooses the teacher generator: settings resolved, checked before queuing, tokens priced."""

from __future__ import annotations

import socket

import pytest

from agents.conductor import ConductorAgent
from agents.conductor.planning import teacher_of
from agents.conductor.settings import load_job_settings
from agents.conductor.steps import DATA
from agents.cost_monitor import CostMonitorAgent
from agents.data_generation import DataGenerationAgent
from protocol import InvalidParams
from protocol.agents.conductor import DataOutput, JobSpec
from protocol.agents.cost_monitor import CostReportOutput, RecordUsageOutput
from protocol.agents.data_generation import TeacherSettings, TeacherUsage
from runtime import open_swarm
from tests.agents.fake_agents import recorded_job

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_jobs_teacher_fields_override_the_configured_ones() -> None:
    configured = TeacherSettings(base_url="http://config.local/v1", model="big", usd_per_million_prompt_tokens=3.0)
    settings = load_job_settings()
    settings = settings.model_copy(update={"data": settings.data.model_copy(update={"teacher": configured})})

    assert teacher_of(JobSpec(target="sleep"), settings) == ("compositional", None)
    generator, teacher = teacher_of(
        JobSpec(target="sleep", generator="teacher", teacher=TeacherSettings(model="small")), settings
    )
    assert generator == "teacher" and teacher is not None
    assert (teacher.base_url, teacher.model, teacher.usd_per_million_prompt_tokens) == (
        "http://config.local/v1",
        "small",
        3.0,
    )
    _, gguf = teacher_of(
        JobSpec(target="sleep", generator="teacher", teacher=TeacherSettings(gguf_path="/m.gguf")), settings
    )
    assert gguf is not None and gguf.gguf_path == "/m.gguf" and gguf.base_url is None  # one or the other

    with pytest.raises(InvalidParams, match="--teacher-url"):
        teacher_of(JobSpec(target="sleep", generator="teacher"), load_job_settings())
    with pytest.raises(InvalidParams, match="need the teacher or mixed generator"):
        teacher_of(JobSpec(target="sleep", teacher=TeacherSettings(base_url="http://t/v1")), load_job_settings())


def test_the_data_step_asks_for_the_planned_teacher_and_reports_its_tokens() -> None:
    job = recorded_job("domain_job_done")
    teacher = TeacherSettings(base_url="http://teacher.local/v1", model="m")
    job.plan = job.plan.model_copy(update={"generator": "teacher", "teacher": teacher})
    (arguments,) = DATA.calls(job).values()
    assert arguments.generator == "teacher" and arguments.teacher == teacher

    data = DATA.read(job)
    assert DATA.tokens(data) is None  # compositional data costs no tokens
    used = TeacherUsage(requests=3, prompt_tokens=900, completion_tokens=600, usd=0.0123)
    tokens = DATA.tokens(DataOutput(**{**dict(data), "teacher_usage": used}))
    assert tokens is not None and (tokens.prompt_tokens, tokens.completion_tokens, tokens.usd) == (900, 600, 0.0123)
    assert used + used == TeacherUsage(requests=6, prompt_tokens=1800, completion_tokens=1200, usd=0.0246)


async def test_token_cost_is_added_to_the_ledger(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), [CostMonitorAgent]) as swarm:
        usage = {
            "job_id": "job-t",
            "step": "data",
            "agent": "data_generation",
            "seconds": 60,
            "tokens": {"prompt_tokens": 1000, "completion_tokens": 500, "usd": 0.25},
        }
        recorded = await swarm.client.call_model("cost_monitor", "record_usage", usage, RecordUsageOutput)
        assert recorded.entry.usd == pytest.approx(0.25) and recorded.entry.tokens is not None
        report = await swarm.client.call_model("cost_monitor", "cost_report", {"by": "step"}, CostReportOutput)
        (row,) = report.rows
        assert (row.key, row.tokens) == ("data", 1500) and row.usd == pytest.approx(0.25)


async def test_a_teacher_job_without_a_usable_teacher_is_refused_before_it_is_queued(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str
) -> None:
    agents = [ConductorAgent, DataGenerationAgent, CostMonitorAgent]
    async with open_swarm(settings_factory(memory_url), agents) as swarm:
        client = swarm.client
        job = {"target": "sleep", "generator": "teacher"}
        with pytest.raises(InvalidParams, match="needs a teacher"):
            await client.call("conductor", "submit_job", job)
        with pytest.raises(InvalidParams, match="http"):
            await client.call("conductor", "submit_job", {**job, "teacher": {"base_url": "localhost:8080"}})
        nobody = f"http://127.0.0.1:{_free_port()}/v1"
        with pytest.raises(InvalidParams, match="not reachable"):
            await client.call("conductor", "submit_job", {**job, "teacher": {"base_url": nobody}})
        with pytest.raises(InvalidParams, match="is not set"):
            teacher = {"base_url": nobody, "api_key_env": "SURELY_UNSET_TEACHER_API_KEY"}
            await client.call("conductor", "submit_job", {**job, "teacher": teacher})
        jobs = await client.call("conductor", "list_jobs", {})
        assert (jobs.structured_content or {})["jobs"] == []


def test_the_submit_tools_schema_offers_the_generator_and_the_teacher() -> None:
    """MCP clients see the agents' own schemas: ``conductor_submit_job`` (and ``swarm_run_job``) take a JobSpec."""
    submit = ConductorAgent.tools.get("submit_job")
    assert submit is not None
    schema = submit.spec.input_schema
    assert {"generator", "teacher"} <= set(schema["properties"])
    teacher = schema["$defs"]["TeacherSettings"]["properties"]
    assert {"base_url", "model", "api_key_env", "concurrency", "requests_per_minute"} <= set(teacher)
