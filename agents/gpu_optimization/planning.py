"""Choosing a run configuration for this device, and pricing a plan on cloud GPUs."""

from __future__ import annotations

import math

from protocol.agents.gpu_optimization import (
    DeviceProfile,
    Precision,
    ProviderOption,
    RecommendProviderInput,
    RecommendProviderOutput,
    TrainingPlan,
    TrainInput,
)
from runtime import Catalog

__all__ = ["CPU_TOKENS_PER_MICRO_BATCH", "plan_training", "recommend_provider"]

CPU_TOKENS_PER_MICRO_BATCH = 2048
"""Rows per CPU forward pass are capped so activations stay in a few GB (CPUs do not report OOM, they swap)."""

_ASSUMED_UTILISATION = 0.25
"""Share of a GPU's peak TFLOPS a small-model LoRA run reaches; used only for estimates."""


def _precision(device: DeviceProfile, requested: Precision | None) -> tuple[Precision, str]:
    if requested is not None:
        return requested, f"precision {requested} requested by the job"
    if device.kind == "cuda" and device.bf16:
        return "bf16", f"{device.name} supports bf16: bf16 autocast, no loss scaling needed"
    if device.kind == "cuda":
        return "fp16", f"{device.name} lacks bf16: fp16 autocast with dynamic loss scaling"
    return "fp32", f"{device.kind} device: fp32 (no fast half-precision matmul)"


def plan_training(
    job: TrainInput, device: DeviceProfile, catalog: Catalog, *, architecture: str | None = None
) -> TrainingPlan:
    """The configuration this device would run ``job`` with; every device-dependent choice explained.

    ``architecture``: the base's, already checked against the architecture table.
    """
    tier = catalog.tier(job.tier)
    defaults = catalog.training
    overrides = job.training
    reasons: list[str] = [] if architecture is None else [f"base architecture {architecture}: supported"]
    precision, why = _precision(device, overrides.precision)
    reasons.append(why)
    if precision == "bf16" and device.kind == "cuda" and not device.bf16:
        reasons.append("warning: bf16 requested on a device without native bf16; it will be slow")
    sequence_length = overrides.sequence_length or defaults.sequence_length
    effective = overrides.effective_batch or tier.batch_size
    probe = False
    if overrides.micro_batch is not None:
        micro = min(overrides.micro_batch, effective)
        reasons.append(f"micro-batch {micro} requested by the job")
    elif device.kind == "cuda":
        micro, probe = effective, True
        reasons.append(f"micro-batch probed from {micro} down, halving on out-of-memory")
    else:
        micro = max(1, min(effective, CPU_TOKENS_PER_MICRO_BATCH // sequence_length))
        reasons.append(
            f"{device.kind}: micro-batch {micro} keeps a forward pass near {CPU_TOKENS_PER_MICRO_BATCH} tokens"
        )
    accumulation = math.ceil(effective / micro)
    if micro * accumulation != effective:
        reasons.append(f"effective batch rounded up from {effective} to {micro * accumulation}")
    max_steps = overrides.max_steps or tier.max_steps
    warmup = overrides.warmup_steps if overrides.warmup_steps is not None else min(50, max_steps // 10)
    checkpoint_every = overrides.checkpoint_every or max(1, min(100, max_steps // 4))
    return TrainingPlan(
        device=device,
        precision=precision,
        loss_scaling=precision == "fp16",
        micro_batch=micro,
        probe_micro_batch=probe,
        grad_accumulation=accumulation,
        effective_batch=micro * accumulation,
        sequence_length=sequence_length,
        max_steps=max_steps,
        learning_rate=overrides.learning_rate or defaults.learning_rate,
        warmup_steps=warmup,
        checkpoint_every=checkpoint_every,
        packing=overrides.packing,
        lora_r=job.lora.r or defaults.lora_r,
        lora_alpha=job.lora.alpha or defaults.lora_alpha,
        lora_dropout=job.lora.dropout if job.lora.dropout is not None else defaults.lora_dropout,
        target_modules=job.lora.target_modules,
        seed=overrides.seed,
        crisis_weight=overrides.crisis_weight,
        reasons=reasons,
    )


def _memory_need_gb(params: RecommendProviderInput) -> float:
    plan = params.plan
    bytes_per_weight = 4 if plan.precision == "fp32" else 2
    weights = params.parameters * bytes_per_weight
    # Activations of a decoder layer stack, roughly 34*hidden bytes per token per layer in half precision;
    # without the model's shape at hand, scale with sqrt(parameters) as a width proxy.
    per_token = 34 * 2 * math.sqrt(params.parameters) * 8
    activations = per_token * plan.micro_batch * plan.sequence_length
    return round((weights + activations) / 2**30 * 1.2 + 1.0, 2)  # +20% and 1 GB for the CUDA context


def recommend_provider(params: RecommendProviderInput, catalog: Catalog) -> RecommendProviderOutput:
    """Cheapest GPU offer with enough memory whose estimated run fits the provider's session limit."""
    plan = params.plan
    memory = params.memory_gb or _memory_need_gb(params)
    tokens = (params.tokens_per_step or plan.effective_batch * plan.sequence_length) * plan.max_steps
    # LoRA: forward (2*N) plus backward through activations (2*N), no weight gradients for the base.
    flops = 4 * params.parameters * tokens
    options: list[ProviderOption] = []
    for key, provider in catalog.providers.items():
        if params.spot_ok is False and provider.spot:
            continue
        for gpu_name, price in provider.prices.items():
            gpu = catalog.gpus[gpu_name]
            if gpu.memory_gb < memory:
                continue
            hours = flops / (gpu.peak_tflops * 1e12 * _ASSUMED_UTILISATION) / 3600
            fits = provider.max_session_hours is None or hours <= provider.max_session_hours
            options.append(
                ProviderOption(
                    provider=key,
                    gpu=gpu_name,
                    usd_per_hour=price,
                    estimated_hours=round(hours, 4),
                    estimated_usd=round(hours * price, 4),
                    fits_session=fits,
                )
            )
    options.sort(key=lambda o: (o.estimated_usd, o.estimated_hours))
    best = next((o for o in options if o.fits_session), None)
    return RecommendProviderOutput(
        best=best, options=options, memory_gb=memory, assumed_utilisation=_ASSUMED_UTILISATION
    )
