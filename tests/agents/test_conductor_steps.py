"""The Conductor's pure parts: settings, the data gate, and what each step asks of which agent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agents.conductor.job_store import JobStore
from agents.conductor.settings import load_job_settings
from agents.conductor.steps import closing_call, data_gate, register_call, step_calls, step_output
from bus import MemoryTransport
from protocol.agents.conductor import STEPS, JobPlan, JobRecord, JobSpec, StepRecord
from protocol.agents.gpu_optimization import TrainingOverrides
from runtime import CatalogError, RecordStore, TransportRecords

REF = {"uri": "file:///x", "sha256": "0" * 64, "size": 1}


def job(domains: tuple[str, ...] = ("sleep",), **spec: object) -> JobRecord:
    plan = JobPlan(
        samples=300,
        training=TrainingOverrides(max_steps=40),
        device="cpu",
        provider="local",
        gpu=None,
        estimated_hours=0.0,
        estimated_usd=0.0,
        reasons=[],
    )
    record = JobRecord(
        job_id="ab" * 16,
        spec=JobSpec(target="sleep", **spec),  # type: ignore[arg-type]
        domains=list(domains),
        plan=plan,
        state="planned",
        steps=[StepRecord(name=s) for s in STEPS],
        created_at=time.time(),
        updated_at=time.time(),
    )
    stats = {"samples": 280, "crisis": 12}
    record.step("data").output = {
        "dataset": REF, "eval_dataset": REF, "stats": stats, "kept": 280, "pass_rate": 0.93,
        "reached_target": True, "eval_samples": 15, "near_duplicate_rate": 0.01,
    }  # fmt: skip
    record.step("knowledge_transfer").output = {"domain": "stress_management", "adapter": REF}
    metrics = {"steps": 40, "final_loss": 1.9, "eval_loss": 2.1, "loss_curve": [[1, 3.0], [40, 1.9]]}
    record.step("train").output = {"adapter": REF, "metrics": metrics, "warm_started": True}
    model = {"model_id": "meetara_sleep", "metadata": REF, "metadata_path": "m.json", "files": []}
    record.step("convert").output = {"models": [model]}
    qa = {"model_id": "meetara_sleep", "report_artifact": REF, "report": {"passed": True}}
    record.step("model_qa").output = {"models": [qa]}
    return record


def test_each_step_calls_its_agent_with_the_previous_steps_artifacts() -> None:
    settings = load_job_settings()
    record = job(base_model="/models/base.gguf")
    calls = {}
    for s in STEPS:
        if s != "data_qa":
            (calls[s],) = step_calls(record, s, settings)
    assert {s: (c.agent, c.tool) for s, c in calls.items()} == {
        "data": ("data_generation", "generate"),
        "knowledge_transfer": ("knowledge_transfer", "recommend"),
        "train": ("gpu_optimization", "train"),
        "convert": ("gguf_creation", "create_gguf"),
        "model_qa": ("quality_assurance", "validate_model"),
        "deploy": ("gguf_creation", "deploy"),
    }
    assert calls["data"].arguments == {"domain": "sleep", "count": 300, "seed": 0}
    train = calls["train"].arguments
    assert train["warm_start"] == REF and train["training"]["max_steps"] == 40
    assert train["base_model"] == "/models/base.gguf" and train["job_id"] == record.job_id
    assert calls["train"].timeout_s == settings.step_timeout_s["train"]
    assert calls["deploy"].arguments["lane"] == "production"
    assert [c.part for c in calls.values()] == ["", "", "", "", "meetara_sleep", "meetara_sleep"]
    assert closing_call(record, "data", {"": {}}, settings) is None
    (cold_call,) = step_calls(job(warm_start=False), "train", settings)
    cold = cold_call.arguments
    assert "warm_start" not in cold and "base_model" not in cold
    registered = register_call(record).arguments
    assert registered["warm_started_from"] == "stress_management" and registered["base_model"] == "/models/base.gguf"


def test_the_data_gate_names_what_is_wrong() -> None:
    settings = load_job_settings()
    record = job()
    passed, result = data_gate(record, settings, crisis_safety=True)
    assert passed and result["reasons"] == [] and result["pass_rate"] == 0.93
    record.step("data").output.update(reached_target=False, kept=120, pass_rate=0.4)
    record.step("data").output["stats"]["crisis"] = 0
    passed, result = data_gate(record, settings, crisis_safety=True)
    assert not passed
    assert result["reasons"] == [
        "only 120 of 300 conversations passed QA",
        "QA pass rate 0.40 is below 0.70",
        "a crisis-sensitive domain's data has no crisis conversations",
    ]


def test_a_broken_jobs_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text("retries: 0\n")
    with pytest.raises(CatalogError, match=r"jobs.yaml is invalid: retries"):
        load_job_settings(tmp_path)


def test_a_category_job_generates_per_domain_then_combines_and_checks_every_model() -> None:
    settings = load_job_settings()
    record = job(domains=("sleep", "stress_management"), scope="category")
    calls = step_calls(record, "data", settings)
    assert [(c.tool, c.part, c.arguments["domain"]) for c in calls] == [
        ("generate", "sleep", "sleep"),
        ("generate", "stress_management", "stress_management"),
    ]
    parts = {
        d: {
            "dataset": REF,
            "eval_dataset": REF,
            "generated": 100,
            "kept": kept,
            "pass_rate": kept / 100,
            "rejections": {"near_duplicate": 4, "length": 100 - kept - 4},
            "rounds": rounds,
            "reached_target": kept >= 90,
            "path": f"{d}.jsonl",
        }
        for d, kept, rounds in (("sleep", 95, 1), ("stress_management", 85, 3))
    }
    closing = closing_call(record, "data", parts, settings)
    assert closing is not None and (closing.agent, closing.tool) == ("data_generation", "combine")
    assert [p["domain"] for p in closing.arguments["parts"]] == ["sleep", "stress_management"]
    assert closing.arguments["scope"] == "category"
    combined = {"dataset": REF, "eval_dataset": REF, "stats": {"samples": 170, "crisis": 3}, "eval_samples": 10}
    output = step_output(record, "data", parts, combined)
    assert output["kept"] == 180 and output["pass_rate"] == 0.9 and output["rounds"] == 3
    assert output["near_duplicate_rate"] == 0.04 and output["rejections"]["length"] == 12
    assert not output["reached_target"] and output["domains"]["sleep"]["reached_target"]
    record.step("data").output = output
    passed, result = data_gate(record, settings, crisis_safety=True)
    assert not passed and result["reasons"] == ["fewer than 300 conversations passed QA for stress_management"]

    models = [{"model_id": m, "metadata": REF} for m in ("meetara_universal_full", "meetara_universal_lite")]
    record.step("convert").output = {"models": models}
    qa_calls = step_calls(record, "model_qa", settings)
    assert [c.part for c in qa_calls] == ["meetara_universal_full", "meetara_universal_lite"]
    reports = {c.part: {"report_artifact": {**REF, "uri": f"file:///{c.part}"}} for c in qa_calls}
    record.step("model_qa").output = step_output(record, "model_qa", reports, None)
    deploys = step_calls(record, "deploy", settings)
    assert [c.arguments["qa_report"]["uri"] for c in deploys] == [
        "file:///meetara_universal_full",
        "file:///meetara_universal_lite",
    ]


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
