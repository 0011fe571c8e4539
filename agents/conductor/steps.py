"""What each pipeline step asks of which agent, built from the job and the steps before it.

Every call carries the job id (progress events) and an idempotency key per (job, step,
attempt), so a Conductor that re-sends a step after a crash gets the stored result instead
of running the work again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.conductor.settings import JobSettings
from protocol.agents.conductor import JobRecord, StepName

__all__ = ["StepCall", "base_identity", "data_gate", "register_call", "step_call"]


@dataclass(frozen=True, slots=True)
class StepCall:
    agent: str
    tool: str
    arguments: dict[str, Any]
    timeout_s: float


def _output(job: JobRecord, step: StepName) -> dict[str, Any]:
    return job.step(step).output


def base_identity(job: JobRecord) -> str:
    """What Knowledge Transfer keys adapters by: an adapter only transfers onto the base it was trained on."""
    return job.spec.base_model or "default"


def register_call(job: JobRecord) -> StepCall:
    """After a domain job is done: index its adapter, data and loss curve for later warm starts."""
    trained = _output(job, "train")
    metrics = trained["metrics"]
    arguments = {
        "domain": job.domains[0],
        "base_model": base_identity(job),
        "adapter": trained["adapter"],
        "dataset": _output(job, "data")["dataset"],
        "job_id": job.job_id,
        "final_loss": metrics["final_loss"],
        "eval_loss": metrics["eval_loss"],
        "steps": metrics["steps"],
        "loss_curve": metrics["loss_curve"],
        "warm_started_from": _output(job, "knowledge_transfer").get("domain") if job.spec.warm_start else None,
    }
    return StepCall("knowledge_transfer", "register", arguments, 600.0)


def step_call(job: JobRecord, step: StepName, settings: JobSettings) -> StepCall:
    """The tool call for ``step`` (not ``data_qa``, which the Conductor decides itself)."""
    spec, timeout = job.spec, settings.step_timeout_s.get(step, 3600.0)
    base = {"base_model": spec.base_model} if spec.base_model else {}
    if step == "data":
        (domain,) = job.domains  # category data arrives with the category pipeline
        arguments: dict[str, Any] = {"domain": domain, "count": job.plan.samples, "seed": spec.seed}
        return StepCall("data_generation", "generate", arguments, timeout)
    data = _output(job, "data")
    if step == "knowledge_transfer":
        arguments = {"domain": job.domains[0], "base_model": base_identity(job), "dataset": data["dataset"]}
        return StepCall("knowledge_transfer", "recommend", arguments, timeout)
    if step == "train":
        warm = _output(job, "knowledge_transfer").get("adapter") if job.spec.warm_start else None
        arguments = {
            "job_id": job.job_id,
            "scope": spec.scope,
            "target": spec.target,
            "dataset": data["dataset"],
            "eval_dataset": data["eval_dataset"],
            "tier": spec.tier,
            "lora": spec.lora.model_dump(exclude_none=True),
            "training": job.plan.training.model_dump(exclude_none=True),
            **({"warm_start": warm} if warm else {}),
            **base,
        }
        return StepCall("gpu_optimization", "train", arguments, timeout)
    trained = _output(job, "train")
    if step == "convert":
        arguments = {
            "job_id": job.job_id,
            "scope": spec.scope,
            "target": spec.target,
            "adapter": trained["adapter"],
            "training": trained["metrics"],
            "data_stats": data["stats"],
            **base,
        }
        return StepCall("gguf_creation", "create_gguf", arguments, timeout)
    (model,) = _output(job, "convert")["models"]
    if step == "model_qa":
        arguments = {
            "job_id": job.job_id,
            "metadata": model["metadata"],
            "eval_dataset": data["eval_dataset"],
            **base,
        }
        return StepCall("quality_assurance", "validate_model", arguments, timeout)
    if step == "deploy":
        arguments = {
            "job_id": job.job_id,
            "metadata": model["metadata"],
            "qa_report": _output(job, "model_qa")["report_artifact"],
            "lane": spec.deploy_lane,
        }
        return StepCall("gguf_creation", "deploy", arguments, timeout)
    raise ValueError(f"step {step!r} is not a tool call")


def data_gate(job: JobRecord, settings: JobSettings, crisis_safety: bool) -> tuple[bool, dict[str, Any]]:
    """The data_qa gate over the data step's result: enough conversations, kept at a sane rate."""
    data = _output(job, "data")
    reasons = []
    if not data.get("reached_target"):
        reasons.append(f"only {data['kept']} of {job.plan.samples} conversations passed QA")
    if data["pass_rate"] < settings.min_data_pass_rate:
        reasons.append(f"QA pass rate {data['pass_rate']:.2f} is below {settings.min_data_pass_rate:.2f}")
    if crisis_safety and data["stats"]["crisis"] == 0:
        reasons.append("a crisis-sensitive domain's data has no crisis conversations")
    result = {
        "passed": not reasons,
        "pass_rate": data["pass_rate"],
        "samples": data["stats"]["samples"],
        "eval_samples": data["eval_samples"],
        "near_duplicate_rate": data["near_duplicate_rate"],
        "reasons": reasons,
    }
    return not reasons, result
