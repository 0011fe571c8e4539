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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.gpu_optimization.checkpoints import (
    Checkpoint,
    TrainingState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from agents.gpu_optimization.decisions import DecisionSet, crisis_opening, decision_loss
from agents.gpu_optimization.packing import PackedBatch, collate_rows, pack_rows, padded_rows
from agents.gpu_optimization.world import World, current_world
from agents.llm.adapter_file import AdapterFile, apply_adapter, write_adapter
from agents.llm.base_model import BaseModelSource, load_base_model, load_tokenizer
from agents.llm.chat_format import IGNORE, EncodedSample, encode_conversation, load_labelled_conversations
from protocol import InvalidParams, MeetaraError
from protocol.agents.gpu_optimization import TrainingMetrics, TrainingPlan
from runtime import atomic_write

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from torch.amp import GradScaler

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
MAX_GRAD_NORM = 1.0
"""Gradient clipping: of the language-model gradient, and of the crisis-decision gradient on its own."""


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
    base: BaseModelSource
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


@dataclass(slots=True)
class _Session:
    """What the phases of a run share: the model in training, its optimizer and the encoded data."""

    run: TrainingRun
    device: str
    autocast: torch.dtype | None
    pad_id: int
    train_samples: list[EncodedSample]
    eval_samples: list[EncodedSample]
    rows: list[list[int]]
    """Training rows: indices into ``train_samples`` (several per row when packed)."""
    model: PeftModel
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: GradScaler
    decisions: DecisionSet | None = None
    """The crisis-decision prompts, when the plan weighs the decision."""
    world: World = field(default_factory=World)
    """The processes training this run together (data-parallel), or this one alone."""

    @property
    def plan(self) -> TrainingPlan:
        return self.run.plan

    def loss_sum(self, batch: PackedBatch) -> _Loss:
        return _loss_sum(self.model, batch, self.device, self.autocast)

    def evaluate(self) -> float | None:
        return _evaluate(self.model, self.eval_samples, self.plan, self.pad_id, self.autocast)

    def batch(self, rows: list[list[int]]) -> PackedBatch:
        plan = self.plan
        return collate_rows(
            rows,
            self.train_samples,
            row_len=plan.sequence_length,
            pad_id=self.pad_id,
            packed=plan.packing,
            opening_weight=plan.opening_weight,
        )


def _decisions(tokenizer: Any, run: TrainingRun) -> DecisionSet | None:
    """The decision prompts when the plan weighs the decision and the data has crisis replies to open as."""
    from agents.text.crisis import load_training_set

    plan = run.plan
    if plan.decision_weight <= 0:
        return None
    systems: list[str] = []
    crisis_replies: list[EncodedSample] = []
    labelled = load_training_set().messages
    crises = [m for kind, texts in labelled.items() if kind != "none" for m in texts]
    ordinary = list(labelled["none"])
    for messages, is_crisis in load_labelled_conversations(run.train_path):
        if messages[0]["role"] == "system" and messages[0]["content"] not in systems:
            systems.append(messages[0]["content"])
        if first := next((m["content"] for m in messages if m["role"] == "user"), None):
            (crises if is_crisis else ordinary).append(first)
        if is_crisis and (sample := encode_conversation(tokenizer, messages, max_tokens=plan.sequence_length)):
            crisis_replies.append(sample)
    opening = crisis_opening(crisis_replies)
    if opening is None or not systems:
        return None  # no crisis replies (or no system prompt) in the data: nothing to open as
    return DecisionSet(tokenizer, systems, crises, ordinary, opening, seed=plan.seed, max_tokens=plan.sequence_length)


@dataclass(slots=True)
class _Pace:
    """This process's part of the run (a resume starts a new one): for rates, ETA and metrics."""

    start_step: int
    started: float = field(default_factory=time.monotonic)
    last_report: float = field(default_factory=time.monotonic)
    tokens: int = 0
    first_loss: float | None = None
    seconds: float = 0.0
    """Time spent in steps, set when the loop ends."""


@dataclass(frozen=True, slots=True)
class _Loss:
    """A micro-batch's summed loss: ``weighted`` (what is optimised; ``plain`` without weights), and
    its loss-carrying tokens."""

    weighted: Any
    plain: Any
    tokens: int


@dataclass(frozen=True, slots=True)
class _Hooks:
    """The caller's callbacks (see ``run_training``)."""

    on_progress: Callable[[TrainingProgress], None] | None
    on_checkpoint: Callable[[Path, int], None] | None
    should_stop: Callable[[], bool] | None


def _loss_sum(model: PeftModel, batch: PackedBatch, device: str, autocast: torch.dtype | None) -> _Loss:
    """Cross-entropy over loss-carrying tokens: summed as the batch weighs them, and plain.

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
    losses = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    if batch.weights is None:
        total = losses.sum()
        return _Loss(total, total.detach(), count)
    weights = batch.weights[:, 1:].to(device)[keep]
    return _Loss((losses * weights).sum(), losses.detach().sum(), count)


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
            loss = _loss_sum(model, batch, device, autocast)
            total += float(loss.plain)
            count += loss.tokens
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


def _lora_model(run: TrainingRun, base_model: Any) -> PeftModel:
    from peft import LoraConfig, get_peft_model

    plan = run.plan
    if run.warm_start is not None:
        return apply_adapter(base_model, run.warm_start, trainable=True)
    config = LoraConfig(
        r=plan.lora_r,
        lora_alpha=plan.lora_alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        lora_dropout=plan.lora_dropout,
        target_modules=plan.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base_model, config)


def _prepare(run: TrainingRun) -> _Session:
    """Encode the data, put a LoRA adapter on the base model and make the optimizer."""
    import torch

    plan = run.plan
    device = _device(plan)
    four_bit = plan.method == "qlora"
    if four_bit and device != "cuda":
        raise InvalidParams(f"QLoRA needs a CUDA GPU (bitsandbytes' 4-bit NF4 kernels); this run's device is {device}")
    base_dtype, autocast = _dtypes(plan)
    torch.manual_seed(plan.seed)  # before the adapter exists: its initial weights are drawn from it
    tokenizer = load_tokenizer(run.base, run.cache_dir)
    train_samples = _encode_file(tokenizer, run.train_path, plan.sequence_length, crisis_weight=plan.crisis_weight)
    if not train_samples:
        raise InvalidParams("the training dataset has no trainable conversations")
    eval_samples = _encode_file(tokenizer, run.eval_path, plan.sequence_length, _EVAL_SAMPLES) if run.eval_path else []
    # No peft.prepare_model_for_kbit_training: it upcasts embeddings, head and norms to fp32 (GBs on a
    # large vocabulary) and turns on gradient checkpointing; the memory plan counts neither, and the
    # adapter's fp32 master weights below give the stability it is for.
    base_model = load_base_model(run.base, run.cache_dir, dtype=base_dtype, device=device, four_bit=four_bit)
    model = _lora_model(run, base_model)
    if not four_bit:  # a 4-bit base is placed as it loads; the adapter follows it
        model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # master weights of the adapter stay fp32 under autocast
    lengths = [len(s) for s in train_samples]
    return _Session(
        run=run,
        device=device,
        autocast=autocast,
        pad_id=int(tokenizer.pad_token_id),
        train_samples=train_samples,
        eval_samples=eval_samples,
        rows=pack_rows(lengths, plan.sequence_length) if plan.packing else padded_rows(len(lengths)),
        model=model,
        params=params,
        optimizer=torch.optim.AdamW(params, lr=plan.learning_rate, weight_decay=0.0),
        scaler=torch.amp.GradScaler(device, enabled=plan.loss_scaling),
        decisions=_decisions(tokenizer, run),
        world=current_world(),
    )


def _resume(session: _Session) -> tuple[TrainingState, int | None]:
    """The run's latest checkpoint restored into the session, with its state and step; else a fresh state."""
    from peft import set_peft_model_state_dict

    run = session.run
    fresh = TrainingState(run_key=run.run_key), None
    found = latest_checkpoint(run.run_dir / "checkpoints") if run.resume else None
    if found is None:
        return fresh
    checkpoint = load_checkpoint(found)
    if checkpoint.state.run_key != run.run_key or checkpoint.step > run.plan.max_steps:
        return fresh  # another run's (other data or settings): never mixed into this one
    set_peft_model_state_dict(session.model, {k: v.to(session.device) for k, v in checkpoint.adapter.items()})
    session.optimizer.load_state_dict(checkpoint.optimizer)
    if checkpoint.scaler:
        session.scaler.load_state_dict(checkpoint.scaler)
    return checkpoint.state, checkpoint.step


def _probe(session: _Session, start: int) -> int:
    """The largest micro-batch <= ``start`` whose forward and backward pass fit, tried on the heaviest rows."""
    rows, samples = session.rows, session.train_samples
    heaviest = sorted(range(len(rows)), key=lambda r: -sum(len(samples[i]) for i in rows[r]))

    def attempt(size: int) -> None:
        loss = session.loss_sum(session.batch([rows[i] for i in heaviest[:size]]))
        session.scaler.scale(loss.weighted).backward()
        session.optimizer.zero_grad(set_to_none=True)

    return probe_micro_batch(attempt, start)


def _micro_batch(session: _Session, state: TrainingState) -> int:
    """Rows per forward pass: a resumed run's, else probed on the device when the plan asks, else the plan's."""
    if state.micro_batch is None:
        start = session.plan.micro_batch
        probed = _probe(session, start) if session.plan.probe_micro_batch else start
        state.micro_batch = session.world.min(probed)  # every process splits the steps the same way
    return state.micro_batch


def _step(session: _Session, state: TrainingState, step: int, rows: list[list[int]], micro: int) -> tuple[float, int]:
    """One optimizer step over ``rows``, ``micro`` rows per pass: its mean loss per loss token, and tokens fed."""
    import torch

    plan, optimizer, scaler, world = session.plan, session.optimizer, session.scaler, session.world
    for group in optimizer.param_groups:
        group["lr"] = _learning_rate(plan, step)
    batches = [session.batch(rows[i : i + micro]) for i in range(0, len(rows), micro)]
    targets = sum(int((b.labels[:, 1:] != IGNORE).sum()) for b in batches)
    weight = sum(b.loss_weight for b in batches)
    step_loss, fed, computed = 0.0, 0, 0
    for index in range(world.rank, len(batches), world.size):  # this process's share of the step
        batch = batches[index]
        # Dropout masks from the step and the micro-batch: the same whatever the resumes or processes.
        torch.manual_seed(_seed(plan, step, index))
        loss = session.loss_sum(batch)
        scaler.scale(loss.weighted / max(weight, 1.0)).backward()
        step_loss += float(loss.plain)
        fed += batch.tokens
        computed += int(batch.input_ids.numel())
    world.sum_gradients(session.params)
    step_loss, fed_sum, computed_sum = world.sum(step_loss, fed, computed)
    fed = int(fed_sum)
    state.computed += int(computed_sum)
    # still scaled, so that the scaler sees an overflow in either gradient
    torch.nn.utils.clip_grad_norm_(session.params, MAX_GRAD_NORM * scaler.get_scale())
    if session.decisions is not None:
        torch.manual_seed(_seed(plan, step, len(batches)))
        _add_decision_gradient(session, session.decisions, state, step)
    scaler.unscale_(optimizer)
    state.tokens += fed
    state.trained_tokens += targets
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    mean_loss = step_loss / max(targets, 1)
    if not math.isfinite(mean_loss):
        raise MeetaraError(f"training diverged at step {step + 1} (loss {mean_loss}); lower the learning rate")
    state.curve.append((step + 1, round(mean_loss, 5)))
    return mean_loss, fed


def _seed(plan: TrainingPlan, step: int, part: int) -> int:
    return plan.seed * 1_000_003 + step * 4099 + part


def _add_decision_gradient(session: _Session, decisions: DecisionSet, state: TrainingState, step: int) -> None:
    """Adds the weighted crisis-decision gradient, clipped on its own, to the step's clipped gradient.

    Clipped together, the decision's gradient (large while the opening is still improbable)
    shrinks the language-model gradient with it. Measured on the demo's data (40 steps, weight 1):
    held-out loss 2.54 clipped together, 2.20 apart, the decision loss 0.21 either way.
    """
    import torch

    plan, params, scaler = session.plan, session.params, session.scaler
    language = [p.grad for p in params]
    for p in params:
        p.grad = None
    prompts = decisions.for_step(step, plan.decision_prompts)
    decision = decision_loss(session.model, prompts, decisions.opening, session.device, session.autocast)
    scaled: Any = scaler.scale(decision * plan.decision_weight)
    scaled.backward()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM * scaler.get_scale())
    for p, grad in zip(params, language, strict=True):
        if grad is not None:
            p.grad = grad if p.grad is None else p.grad.add_(grad)
    state.decision_curve.append((step + 1, round(float(decision.detach()), 5)))


def _save(session: _Session, state: TrainingState, step: int, hooks: _Hooks) -> None:
    from peft import get_peft_model_state_dict

    if not session.world.main:
        return  # every process holds the same adapter and state; one writes them
    checkpoint = Checkpoint(
        step=step,
        adapter=get_peft_model_state_dict(session.model),
        optimizer=session.optimizer.state_dict(),
        scaler=session.scaler.state_dict() if session.plan.loss_scaling else None,
        state=state,
    )
    path = save_checkpoint(session.run.run_dir / "checkpoints", checkpoint)
    if hooks.on_checkpoint is not None:
        hooks.on_checkpoint(path, step)


def _report(
    pace: _Pace, done: int, max_steps: int, loss: float, on_progress: Callable[[TrainingProgress], None]
) -> None:
    now = time.monotonic()
    if now - pace.last_report < _PROGRESS_EVERY_S and done < max_steps:
        return
    pace.last_report = now
    rate = pace.tokens / max(now - pace.started, 1e-9)
    eta = (now - pace.started) / (done - pace.start_step) * (max_steps - done)
    on_progress(TrainingProgress(done, max_steps, loss, rate, eta))


def _train(session: _Session, state: TrainingState, start_step: int, micro: int, hooks: _Hooks) -> _Pace:
    """The steps from ``start_step`` on, with progress, checkpoints, and a checkpointed stop when asked."""
    plan = session.plan
    stream = _RowStream(session.rows, plan.effective_batch, plan.seed)
    pace = _Pace(start_step)
    for step in range(start_step, plan.max_steps):
        loss, fed = _step(session, state, step, stream.for_step(step), micro)
        pace.tokens += fed
        pace.first_loss = loss if pace.first_loss is None else pace.first_loss
        done = step + 1
        if hooks.on_progress is not None and session.world.main:
            _report(pace, done, plan.max_steps, loss, hooks.on_progress)
        if done % plan.checkpoint_every == 0 or done == plan.max_steps:
            _save(session, state, done, hooks)
        asked = hooks.should_stop is not None and hooks.should_stop()
        if session.world.any(asked) and done < plan.max_steps:  # every process stops at the same step
            if done % plan.checkpoint_every:
                _save(session, state, done, hooks)
            raise TrainingStopped(done)
    pace.seconds = time.monotonic() - pace.started
    return pace


def _metrics(
    plan: TrainingPlan, state: TrainingState, pace: _Pace, eval_loss: float | None, micro: int
) -> TrainingMetrics:
    curve = state.curve
    stride = max(1, math.ceil(len(curve) / 200))
    window = [loss for _, loss in curve[-_LOSS_WINDOW:]]
    return TrainingMetrics(
        steps=plan.max_steps,
        tokens=state.tokens,
        trained_tokens=state.trained_tokens,
        first_loss=pace.first_loss,
        final_loss=sum(window) / len(window) if window else None,
        eval_loss_base=state.eval_loss_base,
        eval_loss=eval_loss,
        tokens_per_second=pace.tokens / pace.seconds if pace.seconds > 0 else 0.0,
        seconds=round(pace.seconds, 3),
        micro_batch=micro,
        grad_accumulation=math.ceil(plan.effective_batch / micro),
        padding_fraction=1 - state.tokens / state.computed if state.computed else 0.0,
        loss_curve=curve[::stride],
        decision_curve=state.decision_curve[::stride],
    )


def _finish(
    session: _Session, state: TrainingState, pace: _Pace, micro: int, resumed_from: int | None
) -> TrainingResult:
    """Evaluate, then write the adapter and the metrics file."""
    run = session.run
    main = session.world.main
    metrics = _metrics(run.plan, state, pace, session.evaluate() if main else None, micro)
    adapter_path = run.run_dir / "adapter.safetensors"
    if main:  # the other processes hold the same adapter
        write_adapter(session.model, adapter_path, base_model=run.base.location)
        with atomic_write(run.run_dir / "training_metrics.json") as f:
            f.write(metrics.model_dump_json(indent=2))
    return TrainingResult(metrics=metrics, adapter_path=adapter_path, resumed_from_step=resumed_from)


def run_training(
    run: TrainingRun,
    *,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Train (or resume) the run and write its adapter; blocking, meant for a worker thread."""
    session = _prepare(run)
    state, resumed_from = _resume(session)
    if state.eval_loss_base is None and session.eval_samples and session.world.main:
        with session.model.disable_adapter():
            state.eval_loss_base = session.evaluate()
    micro = _micro_batch(session, state)
    pace = _train(session, state, resumed_from or 0, micro, _Hooks(on_progress, on_checkpoint, should_stop))
    return _finish(session, state, pace, micro, resumed_from)
