"""What each pipeline step asks of which agent, built from the job and the steps before it.

Every call carries the job id (progress events) and an idempotency key per (job, step,
attempt, part), so a Conductor that re-sends a step after a crash gets the stored result instead
of running the work again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from agents.conductor.settings import JobSettings
from protocol.agents.conductor import JobRecord, StepName

__all__ = ["StepCall", "base_identity", "closing_call", "data_gate", "register_call", "step_calls", "step_output"]


@dataclass(frozen=True, slots=True)
class StepCall:
    agent: str
    tool: str
    arguments: dict[str, Any]
    timeout_s: float
    part: str = ""
    """Which part of a step of several calls (a domain's data, one model's QA); empty for a single call."""


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


def _timeout(settings: JobSettings, step: StepName) -> float:
    return settings.step_timeout_s.get(step, 3600.0)


def step_calls(job: JobRecord, step: StepName, settings: JobSettings) -> list[StepCall]:
    """The tool calls of ``step`` (not ``data_qa``, which the Conductor decides itself).

    Most steps are one call. A category or universal job generates data per domain (then
    :func:`closing_call` merges it), and model QA and deploy run once per built model.
    """
    spec, timeout = job.spec, _timeout(settings, step)
    base = {"base_model": spec.base_model} if spec.base_model else {}
    if step == "data":
        single = len(job.domains) == 1
        crisis = {"crisis_fraction": job.plan.crisis_fraction} if job.plan.crisis_fraction is not None else {}
        return [
            StepCall(
                "data_generation",
                "generate",
                {"domain": domain, "count": job.plan.samples, "seed": spec.seed, **crisis},
                timeout,
                part="" if single else domain,
            )
            for domain in job.domains
        ]
    data = _output(job, "data")
    if step == "knowledge_transfer":
        arguments = {"domain": job.domains[0], "base_model": base_identity(job), "dataset": data["dataset"]}
        return [StepCall("knowledge_transfer", "recommend", arguments, timeout)]
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
        return [StepCall("gpu_optimization", "train", arguments, timeout)]
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
        return [StepCall("gguf_creation", "create_gguf", arguments, timeout)]
    models = _output(job, "convert")["models"]
    if step == "model_qa":
        return [
            StepCall(
                "quality_assurance",
                "validate_model",
                {"job_id": job.job_id, "metadata": m["metadata"], "eval_dataset": data["eval_dataset"], **base},
                timeout,
                part=m["model_id"],
            )
            for m in models
        ]
    if step == "deploy":
        reports = {m["model_id"]: m["report_artifact"] for m in _output(job, "model_qa")["models"]}
        return [
            StepCall(
                "gguf_creation",
                "deploy",
                {
                    "job_id": job.job_id,
                    "metadata": m["metadata"],
                    "qa_report": reports[m["model_id"]],
                    "lane": spec.deploy_lane,
                },
                timeout,
                part=m["model_id"],
            )
            for m in models
        ]
    raise ValueError(f"step {step!r} is not a tool call")


def closing_call(
    job: JobRecord, step: StepName, parts: dict[str, dict[str, Any]], settings: JobSettings
) -> StepCall | None:
    """The call that finishes a step of several parts: one training set out of every domain's data."""
    if step != "data" or len(job.domains) == 1:
        return None
    arguments = {
        "scope": job.spec.scope,
        "target": job.spec.target,
        "parts": [
            {"domain": d, "dataset": parts[d]["dataset"], "eval_dataset": parts[d]["eval_dataset"]} for d in job.domains
        ],
    }
    return StepCall("data_generation", "combine", arguments, _timeout(settings, step))


def step_output(
    job: JobRecord, step: StepName, parts: dict[str, dict[str, Any]], closing: dict[str, Any] | None
) -> dict[str, Any]:
    """What a step records: its one call's result, or its parts merged."""
    if step in ("model_qa", "deploy"):
        return {"models": [{"model_id": model_id, **output} for model_id, output in parts.items()]}
    if closing is None:
        return parts[""]
    generated = sum(p["generated"] for p in parts.values())
    kept = sum(p["kept"] for p in parts.values())
    rejections: Counter[str] = Counter()
    for p in parts.values():
        rejections.update(p["rejections"])
    return {
        **closing,
        "generated": generated,
        "kept": kept,
        "pass_rate": kept / generated if generated else 0.0,
        "near_duplicate_rate": rejections["near_duplicate"] / generated if generated else 0.0,
        "rejections": dict(rejections),
        "rounds": max(p["rounds"] for p in parts.values()),
        "reached_target": all(p["reached_target"] for p in parts.values()),
        "domains": {
            d: {
                "kept": p["kept"],
                "pass_rate": p["pass_rate"],
                "reached_target": p["reached_target"],
                "path": p["path"],
            }
            for d, p in parts.items()
        },
    }


def data_gate(job: JobRecord, settings: JobSettings, crisis_safety: bool) -> tuple[bool, dict[str, Any]]:
    """The data_qa gate over the data step's result: enough conversations, kept at a sane rate."""
    data = _output(job, "data")
    reasons = []
    short = [d for d, part in data.get("domains", {}).items() if not part["reached_target"]]
    if short:
        reasons.append(f"fewer than {job.plan.samples} conversations passed QA for {', '.join(short)}")
    elif not data.get("reached_target"):
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
