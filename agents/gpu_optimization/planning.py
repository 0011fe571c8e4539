"""Choosing a run configuration for this device, and pricing a plan on cloud GPUs."""

from __future__ import annotations

import math

from agents.gpu_optimization.memory import BaseFormat, estimate_training_memory
from protocol import InvalidParams
from protocol.agents.gpu_optimization import (
    DeviceProfile,
    MemoryEstimate,
    ModelShape,
    Precision,
    ProviderOption,
    RecommendProviderInput,
    RecommendProviderOutput,
    TrainingMethod,
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


def _requested_method(device: DeviceProfile, requested: TrainingMethod | None, reasons: list[str]) -> None:
    if requested == "qlora" and device.kind != "cuda":
        raise InvalidParams(
            f"QLoRA needs a CUDA GPU (bitsandbytes' 4-bit NF4 training kernels); this device is "
            f"{device.kind}: train with method 'lora' here, or on a GPU"
        )
    if requested is not None:
        reasons.append(f"method {requested} requested by the job")


def plan_training(
    job: TrainInput,
    device: DeviceProfile,
    catalog: Catalog,
    *,
    architecture: str | None = None,
    shape: ModelShape | None = None,
) -> TrainingPlan:
    """The configuration this device would run ``job`` with; every device-dependent choice explained.

    ``architecture``: the base's, already checked against the architecture table; ``shape``: its
    dimensions, for the memory estimate.
    """
    tier = catalog.tier(job.tier)
    defaults = catalog.training
    overrides = job.training
    reasons: list[str] = [] if architecture is None else [f"base architecture {architecture}: supported"]
    precision, why = _precision(device, overrides.precision)
    reasons.append(why)
    _requested_method(device, overrides.method, reasons)
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
    lora_r = job.lora.r or defaults.lora_r
    memory = None
    method: TrainingMethod = overrides.method or "lora"
    if shape is not None:
        memory = _memory_on_device(shape, device, precision, overrides.method, lora_r, micro, sequence_length, reasons)
        method = "qlora" if memory.base_format == "nf4" else "lora"
    processes = _processes(device, overrides.processes, method, accumulation, reasons)
    return TrainingPlan(
        device=device,
        precision=precision,
        method=method,
        loss_scaling=precision == "fp16",
        micro_batch=micro,
        probe_micro_batch=probe,
        grad_accumulation=accumulation,
        effective_batch=micro * accumulation,
        processes=processes,
        sequence_length=sequence_length,
        max_steps=max_steps,
        learning_rate=overrides.learning_rate or defaults.learning_rate,
        warmup_steps=warmup,
        checkpoint_every=checkpoint_every,
        packing=overrides.packing,
        lora_r=lora_r,
        lora_alpha=job.lora.alpha or defaults.lora_alpha,
        lora_dropout=job.lora.dropout if job.lora.dropout is not None else defaults.lora_dropout,
        target_modules=job.lora.target_modules,
        seed=overrides.seed,
        crisis_weight=overrides.crisis_weight,
        opening_weight=overrides.opening_weight,
        decision_weight=overrides.decision_weight,
        decision_prompts=overrides.decision_prompts,
        shape=shape,
        memory=memory,
        reasons=reasons,
    )


def _processes(
    device: DeviceProfile, requested: int | None, method: TrainingMethod, micro_batches: int, reasons: list[str]
) -> int:
    """Data-parallel processes: one unless the job asks for more (untried on several GPUs so far, so
    never by default: two GPU agent replicas on one host would otherwise both take every GPU)."""
    gpus = device.device_count if device.kind == "cuda" else 0
    processes = requested or 1
    if requested is None and gpus > 1:
        reasons.append(f"{gpus} GPUs here: training.processes={gpus} trains one run on all of them")
    if gpus and processes > gpus:
        reasons.append(f"warning: {processes} processes asked for, {gpus} GPU(s) here: {gpus} used")
        processes = gpus
    if processes > 1 and method == "qlora":
        reasons.append("QLoRA trains in one process (its 4-bit base is placed on one GPU as it loads)")
        return 1
    if processes > 1 and device.kind == "mps":
        reasons.append("Apple MPS trains in one process")
        return 1
    if processes > 1:
        where = f"{processes} GPUs" if gpus else f"{processes} CPU processes (gloo; no faster on one CPU)"
        reasons.append(f"data-parallel over {where}: each runs its share of a step's micro-batches")
        if micro_batches < processes:
            reasons.append(f"warning: {micro_batches} micro-batch(es) per step for {processes} processes: some idle")
    return processes


def _memory_on_device(
    shape: ModelShape,
    device: DeviceProfile,
    precision: Precision,
    requested: TrainingMethod | None,
    lora_r: int,
    micro: int,
    sequence_length: int,
    reasons: list[str],
) -> MemoryEstimate:
    """The run's memory estimate on ``device``, by the method the job asked for or the one that fits
    (its ``base_format`` says which: nf4 is QLoRA); what happens where nothing fits goes to ``reasons``."""
    cuda = device.kind == "cuda"

    def estimate(base_format: BaseFormat, micro_batch: int) -> MemoryEstimate:
        return estimate_training_memory(
            shape,
            base_format=base_format,
            lora_r=lora_r,
            micro_batch=micro_batch,
            sequence_length=sequence_length,
            cuda=cuda,
        )

    full: BaseFormat = "fp32" if precision == "fp32" else "bf16"
    available = device.memory_gb
    memory = estimate("nf4" if requested == "qlora" else full, micro)
    lora_floor = estimate(full, 1).total_gb
    fits_only_4_bit = available is not None and lora_floor > available >= estimate("nf4", 1).total_gb
    if requested is None and cuda and fits_only_4_bit:
        label = "fp32" if full == "fp32" else "16-bit"
        reasons.append(
            f"QLoRA: LoRA on a {label} base needs {lora_floor:.2f} GB even at micro-batch 1, "
            f"more than this GPU's {available or 0:.0f} GB; the base quantized to 4-bit NF4 fits"
        )
        memory = estimate("nf4", micro)
    reasons.append(
        f"memory estimate {memory.total_gb:.2f} GB"
        + (f" of {available:.0f} GB" if available is not None else "")
        + f": {memory.base_format} weights {memory.weights_gb:.2f}, activations {memory.activations_gb:.2f}, "
        f"logits {memory.logits_gb:.2f}, LoRA states {memory.lora_gb:.2f}"
    )
    if available is None or memory.total_gb <= available:
        return memory
    if not cuda:
        reasons.append(f"warning: more than this machine's {available:.0f} GB: it will swap or be killed")
    elif estimate(memory.base_format, 1).total_gb <= available:
        reasons.append(f"the micro-batch probe will settle below {micro} (it fits at micro-batch 1)")
    elif memory.base_format != "nf4" and estimate("nf4", 1).total_gb <= available:
        reasons.append("warning: LoRA does not fit this GPU even at micro-batch 1; QLoRA (method qlora) would")
    else:
        reasons.append("warning: this base does not fit this GPU even as QLoRA at micro-batch 1")
    return memory


def _memory_need_gb(params: RecommendProviderInput) -> float:
    """A rough need without the base's shape: weights plus activations scaled from the parameter count."""
    plan = params.plan
    bytes_per_weight = 4 if plan.precision == "fp32" else 2
    weights = params.parameters * bytes_per_weight
    # Activations of a decoder layer stack, roughly 34*hidden bytes per token per layer in half precision;
    # without the model's shape at hand, scale with sqrt(parameters) as a width proxy.
    per_token = 34 * 2 * math.sqrt(params.parameters) * 8
    activations = per_token * plan.micro_batch * plan.sequence_length
    return round((weights + activations) / 2**30 * 1.2 + 1.0, 2)  # +20% and 1 GB for the CUDA context


def _shape(params: RecommendProviderInput) -> ModelShape | None:
    return params.shape or params.plan.shape


def _sized_by_shape(params: RecommendProviderInput) -> bool:
    """Memory is estimated from the base's shape unless the caller gives it (or there is no shape)."""
    return _shape(params) is not None and params.memory_gb is None


def _method_for(params: RecommendProviderInput, memory_gb: float) -> tuple[TrainingMethod, float, int] | None:
    """How the run fits ``memory_gb``: (method, memory, micro-batch), or None.

    LoRA on a 16-bit base is preferred at any micro-batch (halved from the plan's, as the CUDA probe
    would, with gradient accumulation keeping the effective batch), then QLoRA on a 4-bit base.
    """
    plan = params.plan
    if not _sized_by_shape(params):
        need = params.memory_gb or _memory_need_gb(params)
        return ("lora", need, plan.micro_batch) if need <= memory_gb else None
    methods: tuple[tuple[TrainingMethod, BaseFormat], ...] = (("lora", "bf16"), ("qlora", "nf4"))
    for method, base_format in methods:
        micro = plan.micro_batch
        while micro >= 1:
            estimate = _estimate(params, base_format, micro)
            if estimate.total_gb <= memory_gb:
                return method, estimate.total_gb, micro
            micro //= 2
    return None


def _estimate(params: RecommendProviderInput, base_format: BaseFormat, micro_batch: int) -> MemoryEstimate:
    shape = _shape(params)
    assert shape is not None
    return estimate_training_memory(
        shape,
        base_format=base_format,
        lora_r=params.plan.lora_r,
        micro_batch=micro_batch,
        sequence_length=params.plan.sequence_length,
        cuda=True,
    )


def recommend_provider(params: RecommendProviderInput, catalog: Catalog) -> RecommendProviderOutput:
    """Cheapest GPU offer with enough memory whose estimated run fits the provider's session limit.

    With the base's shape, each GPU gets the method that fits it: LoRA on a bf16 base, or QLoRA
    on a 4-bit base where only that fits (bitsandbytes, CUDA only).
    """
    plan = params.plan
    shape = _shape(params)
    parameters = shape.parameters if shape is not None else params.parameters
    tokens = (params.tokens_per_step or plan.effective_batch * plan.sequence_length) * plan.max_steps
    # LoRA: forward (2*N) plus backward through activations (2*N), no weight gradients for the base.
    flops = 4 * parameters * tokens
    options: list[ProviderOption] = []
    for key, provider in catalog.providers.items():
        if params.spot_ok is False and provider.spot:
            continue
        for gpu_name, price in provider.prices.items():
            gpu = catalog.gpus[gpu_name]
            fit = _method_for(params, gpu.memory_gb)
            if fit is None:
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
                    method=fit[0],
                    memory_gb=round(fit[1], 2),
                    micro_batch=fit[2],
                )
            )
    options.sort(key=lambda o: (o.estimated_usd, o.estimated_hours))
    best = next((o for o in options if o.fits_session), None)
    if not _sized_by_shape(params):
        memory = params.memory_gb or _memory_need_gb(params)
    else:  # what LoRA on a 16-bit base needs; a GPU with less gets QLoRA where that fits
        memory = _estimate(params, "bf16", plan.micro_batch).total_gb
    return RecommendProviderOutput(
        best=best, options=options, memory_gb=memory, assumed_utilisation=_ASSUMED_UTILISATION
    )
