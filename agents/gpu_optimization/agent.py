"""The GPU Optimization agent's typed tool surface: device profile, planning, training, pricing."""

from __future__ import annotations

import hashlib
import json
import threading

import anyio
import anyio.to_thread
import structlog

from agents.gpu_optimization.device import profile_device
from agents.gpu_optimization.distributed import train_distributed
from agents.gpu_optimization.memory import shape_of_base
from agents.gpu_optimization.planning import plan_training, recommend_provider
from agents.gpu_optimization.pricing import host_pricing
from agents.gpu_optimization.trainer import TrainingProgress, TrainingRun, TrainingStopped, run_training
from agents.llm.adapter_file import read_adapter
from agents.llm.base_model import BaseModelSource, check_base_architecture, resolve_base_model
from agents.llm.layout import domains_of, trained_dir
from protocol import InvalidParams, MeetaraError
from protocol.agents.gpu_optimization import (
    CheckBaseInput,
    CheckBaseOutput,
    DeviceProfile,
    ModelShape,
    ProfileDeviceInput,
    RecommendProviderInput,
    RecommendProviderOutput,
    TrainingPlan,
    TrainInput,
    TrainOutput,
)
from runtime import Agent, AgentContext, CallContext, ToolError, tool

__all__ = ["GpuOptimizationAgent"]

log = structlog.get_logger("meetara.gpu_optimization")


def _shape_or_none(base: BaseModelSource) -> ModelShape | None:
    """The base's shape for the memory estimate; a plan is still made without one."""
    try:
        return shape_of_base(base)
    except (InvalidParams, ToolError, OSError, ValueError, KeyError) as exc:
        log.warning("base shape unreadable; planning without a memory estimate", base=base.name, error=str(exc))
        return None


def _run_key(params: TrainInput, plan: TrainingPlan, base_identity: str) -> str:
    """What makes two runs the same run (and a checkpoint resumable): data, base, hyper-parameters."""
    essentials = plan.model_dump(exclude={"device", "reasons", "micro_batch", "grad_accumulation", "probe_micro_batch"})
    key = {
        "dataset": params.dataset.sha256,
        "eval": params.eval_dataset.sha256 if params.eval_dataset else None,
        "warm_start": params.warm_start.sha256 if params.warm_start else None,
        "base": base_identity,
        "plan": essentials,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


_CANCEL_POLL_S = 1.0
"""How often a running training checks whether its caller cancelled it."""


class GpuOptimizationAgent(Agent):
    """The training host: knows its device, plans runs for it, trains LoRA adapters."""

    name = "gpu_optimization"
    description = "The GPU host: device profile, run planning, LoRA training with checkpoints, provider pricing."
    concurrency = 1

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self._stopping = threading.Event()
        self._pricing: tuple[str, str | None] = ("local", None)

    async def start(self) -> None:
        settings = self.ctx.settings
        device = await anyio.to_thread.run_sync(profile_device)
        # A host that would be priced wrongly refuses to start: budgets must bite on rented GPUs.
        try:
            self._pricing = host_pricing(settings.provider, settings.gpu, device, self.ctx.catalog)
        except ValueError as exc:
            raise MeetaraError(f"gpu_optimization cannot start: {exc}") from None
        self.log.info("priced as", provider=self._pricing[0], gpu=self._pricing[1], device=device.name)

    def shutting_down(self) -> None:
        # A running training loop checkpoints at its next step and ends; the job can resume elsewhere.
        self._stopping.set()

    @tool(read_only=True)
    async def profile_device(self, params: ProfileDeviceInput) -> DeviceProfile:
        """Detect this instance's accelerator: kind, name, memory, compute capability, bf16, threads."""
        return await self._device()

    async def _device(self) -> DeviceProfile:
        """This host's device, priced as it is rented (or not)."""
        # Importing torch and querying CUDA can take seconds; keep the event loop free.
        device = await anyio.to_thread.run_sync(profile_device)
        provider, gpu = self._pricing
        return device.model_copy(update={"provider": provider, "gpu": gpu})

    @tool(read_only=True)
    async def check_base_model(self, params: CheckBaseInput) -> CheckBaseOutput:
        """Whether a base model can be trained and converted here: found, readable, of a supported architecture.

        The Conductor asks this when a job is submitted, so a base the factory cannot convert is
        refused before any data is generated.
        """
        try:
            base = resolve_base_model(params.base_model)
            architecture = await anyio.to_thread.run_sync(check_base_architecture, base)
        except (InvalidParams, ToolError) as exc:
            return CheckBaseOutput(ok=False, reason=exc.message)
        return CheckBaseOutput(ok=True, architecture=architecture)

    @tool(read_only=True)
    async def plan_training(self, params: TrainInput) -> TrainingPlan:
        """The run configuration this instance would use for a job (precision, batch, steps…) and why.

        A base whose architecture the factory cannot convert is refused here, before any training.
        """
        domains_of(params.scope, params.target, self.ctx.catalog)
        base = resolve_base_model(params.base_model)
        architecture = await anyio.to_thread.run_sync(check_base_architecture, base)
        shape = await anyio.to_thread.run_sync(_shape_or_none, base)
        device = await self._device()
        return plan_training(params, device, self.ctx.catalog, architecture=architecture, shape=shape)

    @tool(read_only=True)
    async def recommend_provider(self, params: RecommendProviderInput) -> RecommendProviderOutput:
        """Cheapest cloud GPU offer that fits a plan's memory need and the provider's session limit."""
        return recommend_provider(params, self.ctx.catalog)

    @tool(idempotent=True)
    async def train(self, params: TrainInput, ctx: CallContext) -> TrainOutput:
        """LoRA-train the base model on a dataset; resumes from the run's latest checkpoint.

        Conversations are packed into rows and only assistant tokens carry loss. Progress (step,
        loss, tokens/s, ETA) is published every few seconds.
        """
        catalog, settings = self.ctx.catalog, self.ctx.settings
        domains_of(params.scope, params.target, catalog)
        base = resolve_base_model(params.base_model)
        architecture = await anyio.to_thread.run_sync(check_base_architecture, base)
        shape = await anyio.to_thread.run_sync(_shape_or_none, base)
        device = await self._device()
        plan = plan_training(params, device, catalog, architecture=architecture, shape=shape)
        run_dir = trained_dir(settings.data_dir, params.scope, params.target, catalog)
        inputs = run_dir / "inputs"
        train_path = await self.ctx.artifacts.fetch(params.dataset, inputs / "train.jsonl")
        eval_path = (
            await self.ctx.artifacts.fetch(params.eval_dataset, inputs / "eval.jsonl") if params.eval_dataset else None
        )
        warm, warm_path = None, None
        if params.warm_start is not None:
            warm_path = await self.ctx.artifacts.fetch(params.warm_start, inputs / "warm_start.safetensors")
            warm = await anyio.to_thread.run_sync(read_adapter, warm_path)
        base_identity = await anyio.to_thread.run_sync(base.identity)
        run = TrainingRun(
            plan=plan,
            base=base,
            cache_dir=settings.model_cache,
            run_dir=run_dir,
            train_path=train_path,
            eval_path=eval_path,
            run_key=_run_key(params, plan, base_identity),
            warm_start=warm,
            resume=params.resume,
        )

        report_progress = ctx.progress_reporter()

        def on_progress(p: TrainingProgress) -> None:
            message = f"step {p.step}/{p.max_steps} loss {p.loss:.4f} {p.tokens_per_second:.0f} tok/s"
            measured = {"loss": p.loss, "tokens_per_second": p.tokens_per_second, "eta_s": p.eta_s}
            report_progress(p.step, p.max_steps, message, meta=measured)

        cancelled = threading.Event()

        async def watch_cancel() -> None:
            while True:
                if await ctx.cancelled():
                    cancelled.set()
                    return
                await anyio.sleep(_CANCEL_POLL_S)

        def should_stop() -> bool:
            return self._stopping.is_set() or cancelled.is_set()

        self.log.info("training", target=params.target, scope=params.scope, base=base.name, plan=plan.reasons)
        stopped: TrainingStopped | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_cancel)
            try:
                if plan.processes > 1:  # one process per GPU, started by torchrun; this one relays
                    result = await anyio.to_thread.run_sync(
                        lambda: train_distributed(
                            run, plan.processes, warm_start=warm_path, on_progress=on_progress, should_stop=should_stop
                        )
                    )
                else:
                    result = await anyio.to_thread.run_sync(
                        lambda: run_training(run, on_progress=on_progress, should_stop=should_stop)
                    )
            except TrainingStopped as exc:  # caught here: leaving the task group would wrap it in a group
                stopped = exc
            finally:
                tg.cancel_scope.cancel()
        if stopped is not None:
            why = "cancelled by the caller" if cancelled.is_set() else "this instance is shutting down"
            raise ToolError(f"{stopped} ({why}); re-run the step to resume", data={"step": stopped.step}) from stopped
        adapter = await self.ctx.artifacts.put_file(result.adapter_path, media_type="application/safetensors")
        self.log.info(
            "trained",
            target=params.target,
            steps=result.metrics.steps,
            eval_loss_base=result.metrics.eval_loss_base,
            eval_loss=result.metrics.eval_loss,
            tokens_per_second=round(result.metrics.tokens_per_second, 1),
        )
        return TrainOutput(
            adapter=adapter,
            adapter_dir=str(run_dir),
            base_model=base.location,
            base_sha256=base_identity if base.kind == "gguf" else None,
            plan=plan.model_copy(
                update={
                    "micro_batch": result.metrics.micro_batch,
                    "grad_accumulation": result.metrics.grad_accumulation,
                }
            ),
            metrics=result.metrics,
            resumed_from_step=result.resumed_from_step,
            warm_started=warm is not None,
        )
