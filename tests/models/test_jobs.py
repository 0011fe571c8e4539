"""Whole jobs on the tiny model: the Conductor drives data -> ... -> deploy, records and reports it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import anyio
import pytest
from transformers import GPT2Config

from agents.conductor import ConductorAgent
from agents.cost_monitor import CostMonitorAgent
from agents.data_generation import DataGenerationAgent
from agents.gguf_creation import GgufCreationAgent
from agents.gpu_optimization import GpuOptimizationAgent
from agents.knowledge_transfer import KnowledgeTransferAgent
from agents.llm.gguf_fields import read_gguf
from agents.quality_assurance import QualityAssuranceAgent
from agents.testing import SMALL_CATEGORY, build_tiny_folder, tiny_catalog, tiny_job_env
from protocol import InvalidParams, JobEventNotification
from protocol.agents.conductor import JobRecord, JobReport, SubmitJobOutput
from protocol.agents.cost_monitor import CostReportOutput
from runtime import AgentHost, Settings, connect, open_swarm
from runtime.testing import log_events

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(900)]


WORKERS = [
    DataGenerationAgent,
    GpuOptimizationAgent,
    GgufCreationAgent,
    QualityAssuranceAgent,
    CostMonitorAgent,
    KnowledgeTransferAgent,
]
ALL = [ConductorAgent, *WORKERS]


def tiny_job(tiny_gguf: Path, **extra: Any) -> dict[str, Any]:
    return {
        "target": "general_health",
        "base_model": str(tiny_gguf),
        "samples": 40,
        "training": {"max_steps": 6, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2},
        **extra,
    }


async def job_status(client: Any, job_id: str) -> JobRecord:
    return await client.call_model("conductor", "job_status", {"job_id": job_id}, JobRecord)  # type: ignore[no-any-return]


async def wait_for_state(client: Any, job_id: str, states: set[str], timeout: float = 600) -> JobRecord:
    with anyio.fail_after(timeout):
        while True:
            job = await job_status(client, job_id)
            if job.state in states:
                return job
            await anyio.sleep(0.2)


@pytest.fixture
def job_settings(settings_factory, memory_url: str, tmp_path: Path, model_cache: Path):  # type: ignore[no-untyped-def]
    def make(**overrides: Any) -> Settings:
        catalog = tiny_catalog(
            tmp_path / "catalog",
            local_usd_per_hour=overrides.pop("local_usd_per_hour", 0.0),
            healthcare_target=overrides.pop("healthcare_target", 1.0),
        )
        values: dict[str, Any] = {
            "model_cache_dir": model_cache,
            "catalog_dir": catalog,
            "request_timeout_s": 120.0,
        }
        values.update(overrides)
        return settings_factory(overrides.pop("bus_url", memory_url), **values)

    return make


async def test_a_domain_job_runs_every_step_once_and_is_deployed_and_reported(  # type: ignore[no-untyped-def]
    job_settings, tmp_path: Path, model_cache: Path
) -> None:
    """On a Qwen2 base given as a Hugging Face folder (the other job tests use GGUF bases)."""
    base = build_tiny_folder(tmp_path / "tiny-qwen2", "qwen2")
    settings = job_settings()
    async with open_swarm(settings, ALL) as swarm:
        since = await swarm.bus.transport.last_id(swarm.bus.keys.events)
        submitted = await swarm.client.call_model("conductor", "submit_job", tiny_job(base), SubmitJobOutput)
        assert submitted.state == "planned" and submitted.domains == ["general_health"]
        job = await wait_for_state(swarm.client, submitted.job_id, {"done", "failed"})
        assert job.state == "done", job.error
        names = ["data", "data_qa", "knowledge_transfer", "train", "convert", "model_qa", "deploy"]
        assert [s.name for s in job.steps] == names
        assert all(s.status == "done" and s.attempts == 1 for s in job.steps)
        assert job.step("knowledge_transfer").output["domain"] is None  # nothing trained before it
        assert job.plan.training.max_steps == 6 and job.plan.samples == 40

        report = await swarm.client.call_model("conductor", "job_report", {"job_id": job.job_id}, JobReport)
        (model,) = report.models
        assert model.model_id == "meetara_general_health" and model.deployed_version == "v1" and model.qa_passed
        assert model.perplexity_adapted < model.perplexity_base  # type: ignore[operator]
        assert {f.kind for f in model.files} == {"adapter", "merged"}
        for f in model.files:
            assert Path(f.path).is_file()
        assert model.qa_report_path and Path(model.qa_report_path).is_file()  # beside the deployed files
        assert model.metadata_path
        metadata = json.loads(Path(model.metadata_path).read_text())
        assert metadata["version"] == "v1"
        # The system prompt most training conversations carry, which the merged file's template now sends.
        stats = job.step("data").output["stats"]["system_prompts"]
        assert metadata["system_prompt"] == max(stats, key=stats.get)
        assert all(s.seconds is not None for s in report.stages) and report.total_seconds
        manifest = json.loads((settings.models_dir / "manifest.json").read_text())
        assert [(m["model_id"], m["job_id"]) for m in manifest["models"]] == [("meetara_general_health", job.job_id)]

        ledger = await swarm.client.call_model(
            "cost_monitor", "cost_report", {"period": "all", "by": "step"}, CostReportOutput
        )
        assert sorted(r.key for r in ledger.rows) == sorted(set(names) - {"data_qa"})
        assert all(r.entries == 1 for r in ledger.rows)

        events = []
        with anyio.move_on_after(1):
            async for record in swarm.bus.events(since=since):
                message = record.envelope.message
                if isinstance(message, JobEventNotification) and message.params.job_id == job.job_id:
                    events.append(message.params)
        states = [e.state for e in events if e.kind == "state_changed"]
        assert states == [*names, "done"]
        assert events[0].kind == "submitted" and events[-1].terminal
        assert any(e.kind == "progress" and e.step == "train" and e.data.get("loss") for e in events)
    (converted,) = (model_cache / "base-gguf").glob("*.gguf")  # the base, converted once for QA's checks
    for path in [converted, *(Path(f.path) for f in model.files)]:
        assert read_gguf(path).value("general.architecture") == "qwen2"


async def test_bad_submissions_are_refused_and_nothing_is_queued(  # type: ignore[no-untyped-def]
    job_settings, tiny_gguf: Path, tmp_path: Path
) -> None:
    settings = job_settings()
    gpt2 = tmp_path / "tiny-gpt2"
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(gpt2)
    async with open_swarm(settings, ALL) as swarm:
        with pytest.raises(InvalidParams, match=r"base model refused: .*'gpt2' is not supported; supported: gemma2"):
            await swarm.client.call("conductor", "submit_job", tiny_job(gpt2))
        with pytest.raises(InvalidParams, match="general_health"):
            await swarm.client.call("conductor", "submit_job", tiny_job(tiny_gguf, target="general_helth"))
        with pytest.raises(InvalidParams, match="unknown tier 'turbo'"):
            await swarm.client.call("conductor", "submit_job", tiny_job(tiny_gguf, tier="turbo"))
        with pytest.raises(InvalidParams, match="max_steps"):
            await swarm.client.call("conductor", "submit_job", tiny_job(tiny_gguf, training={"max_steps": 0}))
        with pytest.raises(InvalidParams, match="no job"):
            await swarm.client.call("conductor", "job_status", {"job_id": "0123456789abcdef"})
        listed = await swarm.client.call("conductor", "list_jobs", {})
        assert listed.structured_content == {"jobs": []}


async def test_a_model_that_fails_qa_fails_the_job_with_the_reasons_and_is_not_deployed(  # type: ignore[no-untyped-def]
    job_settings, tiny_gguf: Path
) -> None:
    settings = job_settings(healthcare_target=99.5)  # the real pass mark: a random model cannot chat
    async with open_swarm(settings, ALL) as swarm:
        job = await swarm.client.call_model("conductor", "submit_job", tiny_job(tiny_gguf), SubmitJobOutput)
        failed = await wait_for_state(swarm.client, job.job_id, {"failed", "done"})
    assert failed.state == "failed" and "model QA did not pass" in (failed.error or "")
    assert "below the category target 99.5%" in (failed.error or "")
    assert failed.step("model_qa").status == "failed" and failed.step("deploy").attempts == 0
    assert not (settings.models_dir / "manifest.json").exists()


async def test_a_step_waits_for_its_agent_to_come_back_without_spending_attempts(  # type: ignore[no-untyped-def]
    job_settings, tiny_gguf: Path
) -> None:
    """The GPU host is away (a container restarting, a spot GPU replaced): the job waits for it."""
    settings = job_settings()
    without_gpu = [a for a in ALL if a is not GpuOptimizationAgent]
    async with open_swarm(settings, without_gpu) as swarm:
        client = swarm.client
        job = await client.call_model("conductor", "submit_job", tiny_job(tiny_gguf), SubmitJobOutput)
        with anyio.fail_after(300):
            while (waiting := await job_status(client, job.job_id)).step("train").waiting_for is None:
                assert waiting.state not in ("failed", "done"), waiting.error
                await anyio.sleep(0.2)
        assert waiting.state == "train" and waiting.step("train").attempts == 1

        async with connect(settings, sender="gpu") as bus:
            gpu = AgentHost(bus, [GpuOptimizationAgent], settings=settings)
            await bus.start_task(gpu.run)
            done = await wait_for_state(client, job.job_id, {"failed", "done"})
            gpu.stop()
            await gpu.wait_stopped()
    assert done.state == "done", done.error
    assert done.step("data").attempts == 1 and done.step("train").attempts == 1
    assert done.step("train").waiting_for is None


def _meetara(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_meetara_run_domain_trains_validates_and_deploys_in_one_process(  # type: ignore[no-untyped-def]
    tmp_path: Path, tiny_gguf: Path, model_cache: Path
) -> None:
    """The README's main command, on the tiny model (the CPU-sized default: 40 steps)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")}
    env = tiny_job_env({**base, "MEETARA_ARTIFACT_URL": str(tmp_path / "artifacts")}, tmp_path, model_cache)
    args = ["run", "--domain", "general_health", "--base-model", str(tiny_gguf), "--samples", "40"]
    out = _meetara(*args, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "CPU-sized run of 40 conversations and 40 steps" in out.stdout
    assert "state=done" in out.stdout and f"v1 in {tmp_path / 'models'}" in out.stdout
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    assert [m["version"] for m in manifest["models"]] == ["v1"]
    # the report's files, written before the job's end was announced, and its loss curve in the terminal
    (report_file,) = (tmp_path / "data" / "reports").glob("*/report.json")
    report = JobReport.model_validate_json(report_file.read_text())
    assert report.state == "done" and len(report.loss_curve) == 40 and report.report_path == str(report_file)
    text = " ".join(out.stdout.split())
    assert f"report │ {report_file}" in text and str(report_file.with_name("loss_curve.svg")) in text
    first = report.loss_curve[0]
    assert f"{first[1]:.3f} (step {first[0]}) ->" in text
    chart = ElementTree.parse(report_file.with_name("loss_curve.svg")).getroot()
    (curve,) = chart.iter("{http://www.w3.org/2000/svg}polyline")
    assert len(curve.attrib["points"].split()) == 40
    deployed = tmp_path / "models" / manifest["models"][0]["path"]
    assert {"README.md", "Modelfile", "Modelfile.adapter"} <= {p.name for p in deployed.iterdir()}


@pytest.mark.slow
def test_consecutive_meetara_runs_remember_jobs_the_ledger_and_the_warm_start_index(  # type: ignore[no-untyped-def]
    tmp_path: Path, tiny_gguf: Path, model_cache: Path
) -> None:
    """The embedded swarm keeps its records in ``data/state.sqlite3``: a second run builds on the first."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")}
    base["MEETARA_ARTIFACT_URL"] = str(tmp_path / "artifacts")
    env = tiny_job_env(base, tmp_path, model_cache, cpu_max_steps=4)  # as cheap as a job gets

    def run(domain: str) -> str:
        out = _meetara(
            "run", "--domain", domain, "--base-model", str(tiny_gguf), "--samples", "40", env=env, timeout=600
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return " ".join(out.stdout.split())  # table cells wrap

    first = run("mental_health")
    assert "no training measured" in first and "warm start" not in first
    assert (tmp_path / "data" / "state.sqlite3").is_file()
    second = run("stress_management")
    assert "s/step measured on this device" in second  # planned from the first job's training
    assert "from the mental_health adapter" in second  # warm-started from the domain the first run indexed

    jobs = _meetara("jobs", env=env, timeout=300)
    assert jobs.returncode == 0, jobs.stderr[-3000:]
    listed = [(j["target"], j["state"]) for j in json.loads(jobs.stdout)["jobs"]]
    assert listed == [("stress_management", "done"), ("mental_health", "done")]
    args = '{"period": "all", "by": "domain"}'
    costs = _meetara("call", "cost_monitor", "cost_report", "--args", args, env=env, timeout=300)
    assert costs.returncode == 0, costs.stderr[-3000:]
    assert sorted(row["key"] for row in json.loads(costs.stdout)["rows"]) == ["mental_health", "stress_management"]


@pytest.mark.redis
def test_a_job_on_the_swarm_of_processes_over_redis(  # type: ignore[no-untyped-def]
    child_env: dict[str, str], tmp_path: Path, tiny_gguf: Path, model_cache: Path
) -> None:
    """`meetara up` (one process per agent) and `meetara submit --wait` of a domain and a category job."""
    env = tiny_job_env(child_env, tmp_path, model_cache)
    log = tmp_path / "up.log"
    with open(log, "w") as sink:  # a file, not a pipe: seven agents' logs would fill a pipe and block them
        up = subprocess.Popen([sys.executable, "-m", "runtime.cli", "up"], env=env, stdout=sink, stderr=sink)
        try:
            deadline = time.monotonic() + 300
            while "7 live agent instance(s)" not in _meetara("agents", env=env, timeout=60).stdout:
                assert time.monotonic() < deadline, f"the swarm did not come up:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
            # A domain job and a category job at once: both queue on the one GPU Optimization agent.
            args = ["--base-model", str(tiny_gguf), "--samples", "40", "--wait"]
            jobs = {
                scope: subprocess.Popen(
                    [sys.executable, "-m", "runtime.cli", "submit", f"--{scope}", target, *args],
                    env={**env, "COLUMNS": "250"},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for scope, target in (("domain", "general_health"), ("category", SMALL_CATEGORY[0]))
            }
            outs = {scope: job.communicate(timeout=600) for scope, job in jobs.items()}
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(120)
    for scope, job in jobs.items():
        stdout, stderr = outs[scope]
        assert job.returncode == 0, stdout[-3000:] + stderr[-3000:]
        assert "state=done" in stdout and "step=train" in stdout
    assert "over 2 domains" in outs["category"][0]
    events = log_events(log.read_text())
    running = {e["instance"] for e in events if e.get("event") == "agents running"}
    stopped = {e["instance"] for e in events if e.get("event") == "agents stopped"}
    trouble = [e for e in events if e.get("level") in ("warning", "error")]
    assert len(running) == 7 and stopped == running, (sorted(running - stopped), trouble, log.read_text()[-3000:])
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    deployed = {m["model_id"]: m for m in manifest["models"]}
    assert sorted(deployed) == ["meetara_general_health", "meetara_specialized_category"]
    category = deployed["meetara_specialized_category"]
    assert category["lane"] == "production" and category["path"].startswith("gguf/production/")
    folder = tmp_path / "models" / "C_category_specific" / "specialized"
    assert [f.name for f in folder.glob("meetara_specialized_category_*.gguf")]
    combined = tmp_path / "data" / "training" / "specialized" / "_category_training_data.jsonl"
    domains = [json.loads(line)["domain"] for line in combined.read_text().splitlines()]
    assert set(domains[:4]) == {"legal", "financial"}  # interleaved, not one domain after the other
