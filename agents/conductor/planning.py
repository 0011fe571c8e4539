"""Sizing a job before it is queued: data size, training parameters, where it runs, what it costs."""

from __future__ import annotations

from pydantic import ValidationError

from agents.conductor import tools
from agents.conductor.settings import JobSettings
from agents.conductor.steps import TRAIN
from agents.llm.default_base import DEFAULT_BASE_NAME
from protocol import InvalidParams, RpcError
from protocol.agents.conductor import JobPlan, JobRecord, JobSpec
from protocol.agents.data_generation import CheckTeacherInput, GeneratorName, TeacherSettings
from protocol.agents.gpu_optimization import CheckBaseInput, ProfileDeviceInput
from runtime import Catalog, SwarmClient, Tier, ToolFailed

__all__ = ["plan_job", "teacher_of"]

_PROFILE_TIMEOUT_S = 30.0
_TEACHER_CHECK_TIMEOUT_S = 60.0


def teacher_of(spec: JobSpec, settings: JobSettings) -> tuple[GeneratorName, TeacherSettings | None]:
    """The job's generator and, for the teacher, its settings: the job's fields over the configured ones."""
    generator = spec.generator or settings.data.generator
    if generator == "compositional":
        if spec.teacher is not None:  # a teacher given for nothing is a mistake, not a preference
            raise InvalidParams("teacher settings need the teacher or mixed generator (--generator teacher)")
        return generator, None
    given = spec.teacher.model_dump(include=spec.teacher.model_fields_set) if spec.teacher else {}
    if "base_url" in given and "gguf_path" not in given:
        given["gguf_path"] = None  # a job naming an endpoint replaces a configured GGUF teacher, and back
    if "gguf_path" in given and "base_url" not in given:
        given["base_url"] = None
    teacher = TeacherSettings.model_validate({**settings.data.teacher.model_dump(), **given})
    if not teacher.base_url and not teacher.gguf_path:
        raise InvalidParams(
            f"the {generator} generator needs a teacher: give --teacher-url URL --teacher-model NAME "
            "(teacher.base_url in the job) or set data.teacher.base_url in configs/jobs.yaml"
        )
    return generator, teacher


async def _check_teacher(teacher: TeacherSettings, client: SwarmClient, reasons: list[str]) -> None:
    """Refuse the job now, before any step, when Data Generation says the teacher cannot be used."""
    try:
        check = await tools.CHECK_TEACHER.call(
            client, CheckTeacherInput(teacher=teacher), timeout=_TEACHER_CHECK_TIMEOUT_S
        )
    except (RpcError, ToolFailed) as exc:
        reasons.append(f"teacher not checked: Data Generation did not answer ({exc})")
        return
    if not check.ok:
        raise InvalidParams(f"teacher unusable: {check.reason}", data={"models": check.models[:20]})
    where = teacher.base_url or teacher.gguf_path
    reasons.append(f"training data written by the teacher {teacher.model} at {where}")


_NOT_CHECKED = "GPU Optimization did not answer"


async def _check_base(base_model: str | None, client: SwarmClient, reasons: list[str]) -> str | None:
    """Why GPU Optimization cannot train on the base or convert what it trains (None: it can;
    ``_NOT_CHECKED``: it did not say)."""
    try:
        check = await tools.CHECK_BASE.call(client, CheckBaseInput(base_model=base_model), timeout=_PROFILE_TIMEOUT_S)
    except (RpcError, ToolFailed) as exc:
        reasons.append(f"base model not checked: GPU Optimization did not answer ({exc})")
        return _NOT_CHECKED
    if not check.ok:
        return check.reason or "refused"
    reasons.append(f"base model architecture {check.architecture}")
    return None


async def _choose_base(spec: JobSpec, tier: Tier, kind: str, client: SwarmClient, reasons: list[str]) -> str | None:
    """The job's base, else its tier's on a CUDA host that has it, else the pip-shipped default.

    Refuses the job now, before any step, when the base it names cannot be trained or converted
    (a base that could not be checked is left to the train step).
    """
    if spec.base_model is not None:
        if (refused := await _check_base(spec.base_model, client, reasons)) not in {None, _NOT_CHECKED}:
            raise InvalidParams(f"base model refused: {refused}")
        return spec.base_model
    if kind != "cuda":
        reasons.append(
            f"base model: the default {DEFAULT_BASE_NAME}, not the {spec.tier} tier's {tier.base_model} "
            f"(sized for CUDA GPUs; this host is {kind}); --base-model picks another"
        )
    elif refused := await _check_base(tier.base_model, client, reasons):
        reasons.append(
            f"base model: the {spec.tier} tier's {tier.base_model} is not usable on the GPU host ({refused}); "
            f"the default {DEFAULT_BASE_NAME} instead (download the tier's base into the host's Hugging Face "
            "cache, or pass --base-model)"
        )
    else:
        reasons.append(f"base model: the {spec.tier} tier's {tier.base_model}")
        return tier.base_model
    if (refused := await _check_base(None, client, reasons)) not in {None, _NOT_CHECKED}:
        raise InvalidParams(f"base model refused: {refused}")
    return None


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
        device_name, kind, provider, gpu = device.name, device.kind, device.provider, device.gpu
    except RpcError as exc:
        device_name, kind, provider, gpu = "unknown", None, "local", None
        reasons.append(f"GPU Optimization not reachable to profile its device ({exc.message}); tier sizes kept")
    base_model = spec.base_model
    if kind is not None:
        base_model = await _choose_base(spec, tier, kind, client, reasons)
    training = spec.training.model_copy()
    if kind == "cpu":
        cpu = settings.cpu_default
        samples = spec.samples or max(cpu.samples // len(domains), cpu.min_samples_per_domain)
        training.max_steps = training.max_steps or cpu.max_steps
        training.effective_batch = training.effective_batch or cpu.effective_batch
        training.learning_rate = training.learning_rate or cpu.learning_rate
        # Fields with a protocol default: the CPU's value unless the job set its own.
        for name in ("crisis_weight", "opening_weight", "decision_weight", "decision_prompts"):
            if name not in spec.training.model_fields_set:
                setattr(training, name, getattr(cpu, name))
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
    generator, teacher = teacher_of(spec, settings)
    if teacher is not None:
        await _check_teacher(teacher, client, reasons)
        if generator == "mixed":
            reasons.append("compositional drafts rewritten by the teacher")
    steps = training.max_steps or tier.max_steps
    per_step = _seconds_per_step(history, device_name)
    if per_step is None:
        hours = 0.0
        reasons.append(f"no training measured on {device_name} yet: the first job is estimated at 0 hours")
    else:
        hours = per_step * steps / 3600
        reasons.append(f"estimated {hours:.2f} h from {per_step:.1f} s/step measured on this device")
    if provider != "local":
        reasons.append(f"{device_name} is rented from {provider} as {gpu}: its hours are priced at that rate")
    return JobPlan(
        samples=samples,
        crisis_fraction=crisis_fraction,
        generator=generator,
        teacher=teacher,
        training=training,
        base_model=base_model,
        device=device_name,
        provider=provider,
        gpu=gpu,
        estimated_hours=round(hours, 4),
        estimated_usd=0.0,
        reasons=reasons,
    )
