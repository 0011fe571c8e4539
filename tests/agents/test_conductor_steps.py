"""The Conductor's pure parts: settings, the data gate, and what each step asks of which agent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agents.conductor.settings import load_job_settings
from agents.conductor.steps import data_gate, register_call, step_call
from protocol.agents.conductor import STEPS, JobPlan, JobRecord, JobSpec, StepRecord
from protocol.agents.gpu_optimization import TrainingOverrides
from runtime import CatalogError

REF = {"uri": "file:///x", "sha256": "0" * 64, "size": 1}


def job(**spec: object) -> JobRecord:
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
        domains=["sleep"],
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
    record.step("convert").output = {"models": [{"metadata": REF, "metadata_path": "m.json", "files": []}]}
    record.step("model_qa").output = {"report_artifact": REF, "report": {"passed": True}}
    return record


def test_each_step_calls_its_agent_with_the_previous_steps_artifacts() -> None:
    settings = load_job_settings()
    record = job(base_model="/models/base.gguf")
    calls = {s: step_call(record, s, settings) for s in STEPS if s != "data_qa"}
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
    cold = step_call(job(warm_start=False), "train", settings).arguments
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
