"""The LoRA training loop: packed rows, assistant-only loss, accumulation, checkpoints, resume.

A hand-written loop rather than ``transformers.Trainer`` because the parts that make it fast and
safe are exactly the parts Trainer hides: packed rows with per-sequence positions, the output head
applied only where a token carries loss, a micro-batch probe that survives out-of-memory, and
pickle-free checkpoints that resume mid-run with the same data order.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.gpu_optimization.checkpoints import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from agents.gpu_optimization.packing import PackedBatch, collate_rows, pack_rows, padded_rows
from agents.llm.adapter_file import AdapterFile, apply_adapter, write_adapter
from agents.llm.base_model import BaseModel, load_base_model, load_tokenizer
from agents.llm.chat_format import IGNORE, EncodedSample, encode_conversation, load_labelled_conversations
from protocol import InvalidParams, MeetaraError
from protocol.agents.gpu_optimization import TrainingMetrics, TrainingPlan
from runtime import atomic_write

if TYPE_CHECKING:
    import torch
    from peft import PeftModel

__all__ = [
    "TrainingProgress",
    "TrainingResult",
    "TrainingRun",
    "TrainingStopped",
    "is_out_of_memory",
    "probe_micro_batch",
    "run_training",
]

_EVAL_SAMPLES = 256
_PROGRESS_EVERY_S = 2.0
_LOSS_WINDOW = 20


class TrainingStopped(MeetaraError):
    """Training was asked to stop (budget, cancel); the latest state is checkpointed."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped at step {step}; a checkpoint holds it")
        self.step = step


@dataclass(frozen=True, slots=True)
class TrainingProgress:
    step: int
    max_steps: int
    loss: float
    tokens_per_second: float
    eta_s: float


@dataclass(frozen=True, slots=True)
class TrainingRun:
    """Everything one run needs; ``run_key`` identifies it so a resume never mixes two runs."""

    plan: TrainingPlan
    base: BaseModel
    cache_dir: Path
    run_dir: Path
    train_path: Path
    eval_path: Path | None
    run_key: str
    warm_start: AdapterFile | None = None
    resume: bool = True


@dataclass(frozen=True, slots=True)
class TrainingResult:
    metrics: TrainingMetrics
    adapter_path: Path
    resumed_from_step: int | None


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError) or "out of memory" in str(exc).lower()


def probe_micro_batch(try_batch: Callable[[int], None], start: int) -> int:
    """The largest micro-batch <= ``start`` (halving) for which ``try_batch`` does not run out of memory."""
    size = start
    while size >= 1:
        try:
            try_batch(size)
            return size
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _free_accelerator_memory()
            size //= 2
    raise MeetaraError("even a micro-batch of one row does not fit in device memory; lower sequence_length")


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device(plan: TrainingPlan) -> str:
    return {"cuda": "cuda", "mps": "mps"}.get(plan.device.kind, "cpu")


def _dtypes(plan: TrainingPlan) -> tuple[torch.dtype, torch.dtype | None]:
    """(dtype of the frozen base weights, autocast dtype or None)."""
    import torch

    if plan.precision == "bf16":
        return torch.bfloat16, torch.bfloat16
    if plan.precision == "fp16":
        return torch.float16, torch.float16
    return torch.float32, None


def _learning_rate(plan: TrainingPlan, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < plan.warmup_steps:
        return plan.learning_rate * (step + 1) / plan.warmup_steps
    span = max(1, plan.max_steps - plan.warmup_steps)
    progress = min(1.0, (step - plan.warmup_steps) / span)
    return plan.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _encode_file(
    tokenizer: Any, path: Path, max_tokens: int, limit: int | None = None, *, crisis_weight: int = 1
) -> list[EncodedSample]:
    """Encoded conversations; each crisis conversation appears ``crisis_weight`` times."""
    samples: list[EncodedSample] = []
    for messages, crisis in load_labelled_conversations(path):
        encoded = encode_conversation(tokenizer, messages, max_tokens=max_tokens)
        if encoded is not None:
            samples.extend([encoded] * (crisis_weight if crisis else 1))
        if limit is not None and len(samples) >= limit:
            break
    return samples


def _loss_sum(model: PeftModel, batch: PackedBatch, device: str, autocast: torch.dtype | None) -> tuple[Any, int]:
    """Summed cross-entropy over loss-carrying tokens, and their count.

    The output head (vocabulary x hidden, the single largest matrix of a small model) runs only on
    positions whose next token carries loss, instead of on every position.
    """
    import torch
    import torch.nn.functional as F

    inner: Any = model.get_base_model()
    context = torch.autocast(device_type=device, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    targets = batch.labels[:, 1:].to(device)
    keep = targets != IGNORE
    count = int(keep.sum())
    with context:
        hidden = inner.model(
            input_ids=batch.input_ids.to(device),
            position_ids=batch.position_ids.to(device),
            attention_mask=None if batch.attention_mask is None else batch.attention_mask.to(device),
            use_cache=False,
        ).last_hidden_state
        logits = inner.lm_head(hidden[:, :-1][keep])
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, count


def _evaluate(
    model: PeftModel, samples: list[EncodedSample], plan: TrainingPlan, pad_id: int, autocast: torch.dtype | None
) -> float | None:
    """Mean held-out loss per loss-carrying token."""
    import torch

    if not samples:
        return None
    device = _device(plan)
    rows = pack_rows([len(s) for s in samples], plan.sequence_length)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), plan.micro_batch):
            batch = collate_rows(
                rows[start : start + plan.micro_batch],
                samples,
                row_len=plan.sequence_length,
                pad_id=pad_id,
                packed=True,
            )
            loss, n = _loss_sum(model, batch, device, autocast)
            total += float(loss)
            count += n
    model.train()
    return total / count if count else None


class _RowStream:
    """Rows for optimizer step ``s``: a fixed slice of an endless sequence of seeded epoch shuffles.

    Depends only on (rows, seed, step), so a resumed run sees exactly the rows it would have seen.
    """

    def __init__(self, rows: list[list[int]], per_step: int, seed: int) -> None:
        self.rows, self.per_step, self.seed = rows, per_step, seed
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng((self.seed, epoch)).permutation(len(self.rows))}
        return self._orders[epoch]

    def for_step(self, step: int) -> list[list[int]]:
        n = len(self.rows)
        picked = []
        for position in range(step * self.per_step, (step + 1) * self.per_step):
            epoch, index = divmod(position, n)
            picked.append(self.rows[int(self._order(epoch)[index])])
        return picked


def _lora_model(run: TrainingRun, base_model: Any) -> tuple[PeftModel, list[str]]:
    from peft import LoraConfig, get_peft_model

    plan = run.plan
    if run.warm_start is not None:
        notes = [f"warm start from an adapter (r={run.warm_start.rank}, alpha={run.warm_start.alpha:g})"]
        return apply_adapter(base_model, run.warm_start, trainable=True), notes
    config = LoraConfig(
        r=plan.lora_r,
        lora_alpha=plan.lora_alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        lora_dropout=plan.lora_dropout,
        target_modules=plan.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base_model, config), []


def run_training(
    run: TrainingRun,
    *,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Train (or resume) the run and write its adapter; blocking, meant for a worker thread."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    plan = run.plan
    device = _device(plan)
    base_dtype, autocast = _dtypes(plan)
    torch.manual_seed(plan.seed)
    tokenizer = load_tokenizer(run.base, run.cache_dir)
    pad_id = int(tokenizer.pad_token_id)
    train_samples = _encode_file(tokenizer, run.train_path, plan.sequence_length, crisis_weight=plan.crisis_weight)
    if not train_samples:
        raise InvalidParams("the training dataset has no trainable conversations")
    eval_samples = _encode_file(tokenizer, run.eval_path, plan.sequence_length, _EVAL_SAMPLES) if run.eval_path else []

    base_model = load_base_model(run.base, run.cache_dir, dtype=base_dtype, device=device)
    model, _notes = _lora_model(run, base_model)
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # master weights of the adapter stay fp32 under autocast
    optimizer = torch.optim.AdamW(params, lr=plan.learning_rate, weight_decay=0.0)
    scaler = torch.amp.GradScaler(device, enabled=plan.loss_scaling)

    rows = (
        pack_rows([len(s) for s in train_samples], plan.sequence_length)
        if plan.packing
        else padded_rows(len(train_samples))
    )
    stream = _RowStream(rows, plan.effective_batch, plan.seed)
    checkpoints = run.run_dir / "checkpoints"

    start_step, resumed_from = 0, None
    state: dict[str, Any] = {"tokens": 0, "trained_tokens": 0, "computed": 0, "curve": [], "eval_loss_base": None}
    found = latest_checkpoint(checkpoints) if run.resume else None
    if found is not None:
        checkpoint = load_checkpoint(found)
        if checkpoint.state.get("run_key") == run.run_key and checkpoint.step <= plan.max_steps:
            set_peft_model_state_dict(model, {k: v.to(device) for k, v in checkpoint.adapter.items()})
            optimizer.load_state_dict(checkpoint.optimizer)
            if checkpoint.scaler:
                scaler.load_state_dict(checkpoint.scaler)
            start_step = resumed_from = checkpoint.step
            state.update(checkpoint.state)

    if state["eval_loss_base"] is None and eval_samples:
        with model.disable_adapter():
            state["eval_loss_base"] = _evaluate(model, eval_samples, plan, pad_id, autocast)

    micro = int(state.get("micro_batch") or plan.micro_batch)
    if plan.probe_micro_batch and "micro_batch" not in state:
        heaviest = sorted(range(len(rows)), key=lambda r: -sum(len(train_samples[i]) for i in rows[r]))

        def attempt(size: int) -> None:
            batch = collate_rows(
                [rows[i] for i in heaviest[:size]],
                train_samples,
                row_len=plan.sequence_length,
                pad_id=pad_id,
                packed=plan.packing,
            )
            loss, _ = _loss_sum(model, batch, device, autocast)
            scaler.scale(loss).backward()
            optimizer.zero_grad(set_to_none=True)

        micro = probe_micro_batch(attempt, micro)
    accumulation = math.ceil(plan.effective_batch / micro)
    state["micro_batch"] = micro

    def snapshot(step: int) -> Path:
        checkpoint = Checkpoint(
            step=step,
            adapter=get_peft_model_state_dict(model),
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict() if plan.loss_scaling else None,
            state={**state, "run_key": run.run_key},
        )
        path = save_checkpoint(checkpoints, checkpoint)
        if on_checkpoint is not None:
            on_checkpoint(path, step)
        return path

    losses: list[float] = []
    first_loss: float | None = None
    run_tokens = 0
    started = last_report = time.monotonic()
    for step in range(start_step, plan.max_steps):
        torch.manual_seed(plan.seed * 1_000_003 + step)  # dropout masks independent of resumes
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(plan, step)
        step_rows = stream.for_step(step)
        batches = [
            collate_rows(
                step_rows[i : i + micro],
                train_samples,
                row_len=plan.sequence_length,
                pad_id=pad_id,
                packed=plan.packing,
            )
            for i in range(0, len(step_rows), micro)
        ]
        targets = sum(int((b.labels[:, 1:] != IGNORE).sum()) for b in batches)
        step_loss = 0.0
        for batch in batches:
            loss, _ = _loss_sum(model, batch, device, autocast)
            scaler.scale(loss / max(targets, 1)).backward()
            step_loss += float(loss.detach())
            state["tokens"] += batch.tokens
            state["computed"] += int(batch.input_ids.numel())
            run_tokens += batch.tokens
        state["trained_tokens"] += targets
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        mean_loss = step_loss / max(targets, 1)
        if not math.isfinite(mean_loss):
            raise MeetaraError(f"training diverged at step {step + 1} (loss {mean_loss}); lower the learning rate")
        first_loss = mean_loss if first_loss is None else first_loss
        losses.append(mean_loss)
        state["curve"].append((step + 1, round(mean_loss, 5)))
        done = step + 1
        now = time.monotonic()
        if on_progress is not None and (now - last_report >= _PROGRESS_EVERY_S or done == plan.max_steps):
            last_report = now
            rate = run_tokens / max(now - started, 1e-9)
            steps_left = plan.max_steps - done
            eta = (now - started) / (done - start_step) * steps_left
            on_progress(TrainingProgress(done, plan.max_steps, mean_loss, rate, eta))
        if done % plan.checkpoint_every == 0 or done == plan.max_steps:
            snapshot(done)
        if should_stop is not None and should_stop() and done < plan.max_steps:
            if done % plan.checkpoint_every:
                snapshot(done)
            raise TrainingStopped(done)
    seconds = time.monotonic() - started

    eval_loss = _evaluate(model, eval_samples, plan, pad_id, autocast)
    adapter_path = run.run_dir / "adapter.safetensors"
    write_adapter(model, adapter_path, base_model=run.base.location)
    model.save_pretrained(str(run.run_dir / "adapter"), safe_serialization=True)

    curve = state["curve"]
    stride = max(1, math.ceil(len(curve) / 200))
    window = [loss for _, loss in curve[-_LOSS_WINDOW:]]
    metrics = TrainingMetrics(
        steps=plan.max_steps,
        tokens=state["tokens"],
        trained_tokens=state["trained_tokens"],
        first_loss=first_loss,
        final_loss=sum(window) / len(window) if window else None,
        eval_loss_base=state["eval_loss_base"],
        eval_loss=eval_loss,
        tokens_per_second=run_tokens / seconds if seconds > 0 else 0.0,
        seconds=round(seconds, 3),
        micro_batch=micro,
        grad_accumulation=accumulation,
        padding_fraction=1 - state["tokens"] / state["computed"] if state["computed"] else 0.0,
        loss_curve=[tuple(point) for point in curve[::stride]],
    )
    with atomic_write(run.run_dir / "training_metrics.json") as f:
        f.write(metrics.model_dump_json(indent=2))
    return TrainingResult(metrics=metrics, adapter_path=adapter_path, resumed_from_step=resumed_from)
