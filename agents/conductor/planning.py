"""Sizing a job before it is queued: data size, training parameters, where it runs, what it costs."""

from __future__ import annotations

from pydantic import ValidationError

from agents.conductor import tools
from agents.conductor.settings import JobSettings
from agents.conductor.steps import TRAIN
from protocol import RpcError
from protocol.agents.conductor import JobPlan, JobRecord, JobSpec
from protocol.agents.gpu_optimization import ProfileDeviceInput
from runtime import Catalog, SwarmClient

__all__ = ["plan_job"]

_PROFILE_TIMEOUT_S = 30.0


def _seconds_per_step(history: list[JobRecord], device: str) -> float | None:
    """Measured training seconds per step on this device, from the newest finished training."""
    for job in history:
        record = job.step("train")
        if record.status != "done" or job.plan.device != device or not record.seconds:
            continue
        try:
            steps = TRAIN.read(job).metrics.steps
        except ValidationError:  # recorded by a version whose training output differs: no measurement
            continue
        if steps:
            return record.seconds / steps
    return None


async def plan_job(
    spec: JobSpec,
    domains: list[str],
    client: SwarmClient,
    catalog: Catalog,
    settings: JobSettings,
    history: list[JobRecord],
) -> JobPlan:
    tier = catalog.tier(spec.tier)
    reasons: list[str] = []
    try:
        device = await tools.PROFILE_DEVICE.call(client, ProfileDeviceInput(), timeout=_PROFILE_TIMEOUT_S)
        device_name, kind = device.name, device.kind
    except RpcError as exc:
        device_name, kind = "unknown", None
        reasons.append(f"GPU Optimization not reachable to profile its device ({exc.message}); tier sizes kept")
    training = spec.training.model_copy()
    if kind == "cpu":
        cpu = settings.cpu_default
        samples = spec.samples or max(cpu.samples // len(domains), cpu.min_samples_per_domain)
        training.max_steps = training.max_steps or cpu.max_steps
        training.effective_batch = training.effective_batch or cpu.effective_batch
        training.learning_rate = training.learning_rate or cpu.learning_rate
        if "crisis_weight" not in spec.training.model_fields_set:
            training.crisis_weight = cpu.crisis_weight
        crisis_fraction: float | None = cpu.crisis_fraction
        reasons.append(
            f"training runs on a CPU ({device_name}): CPU-sized run of {samples} conversations and "
            f"{training.max_steps} steps instead of the {spec.tier} tier's GPU-sized one"
        )
    else:
        samples, crisis_fraction = spec.samples or tier.samples, None
        reasons.append(f"{spec.tier} tier on {device_name}: {samples} conversations per domain")
    if len(domains) > 1:
        reasons.append(f"{len(domains)} domains x {samples} conversations")
    steps = training.max_steps or tier.max_steps
    per_step = _seconds_per_step(history, device_name)
    if per_step is None:
        hours = 0.0
        reasons.append(f"no training measured on {device_name} yet: the first job is estimated at 0 hours")
    else:
        hours = per_step * steps / 3600
        reasons.append(f"estimated {hours:.2f} h from {per_step:.1f} s/step measured on this device")
    return JobPlan(
        samples=samples,
        crisis_fraction=crisis_fraction,
        training=training,
        device=device_name,
        provider="local",
        gpu=None,
        estimated_hours=round(hours, 4),
        estimated_usd=0.0,
        reasons=reasons,
    )
