"""One run trained data-parallel by two processes (torchrun, gloo on the CPU): the same curve as one
process on the same global batch, and a resume after the processes are killed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch

from agents.gpu_optimization import GpuOptimizationAgent
from agents.gpu_optimization.checkpoints import latest_checkpoint, load_checkpoint
from agents.gpu_optimization.distributed import (
    DistributedRun,
    kill_process_tree,
    torchrun_command,
    train_distributed,
)
from agents.gpu_optimization.trainer import TrainingProgress, run_training
from agents.llm.adapter_file import read_adapter
from protocol.agents.gpu_optimization import TrainingPlan, TrainOutput
from runtime import open_swarm
from tests.models.training_helpers import tiny_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TRAINING = {"max_steps": 6, "effective_batch": 8, "micro_batch": 2, "checkpoint_every": 2}


def assert_same_adapter(a: Path, b: Path) -> None:
    first, second = read_adapter(a), read_adapter(b)
    assert first.tensors.keys() == second.tensors.keys()
    for key, tensor in second.tensors.items():
        torch.testing.assert_close(first.tensors[key], tensor, atol=1e-4, rtol=1e-3)


def test_two_processes_follow_the_one_process_loss_curve_and_resume_after_a_kill(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path], tmp_path: Path
) -> None:
    train, evaluation = conversations
    alone = run_training(tiny_run(tiny_gguf, model_cache, tmp_path / "alone", train, evaluation, **TRAINING))

    seen: list[TrainingProgress] = []
    pair_run = tiny_run(tiny_gguf, model_cache, tmp_path / "pair", train, evaluation, **TRAINING)
    pair = train_distributed(pair_run, 2, on_progress=seen.append)
    assert [s for s, _ in pair.metrics.loss_curve] == [1, 2, 3, 4, 5, 6]
    for (_, one), (_, two) in zip(alone.metrics.loss_curve, pair.metrics.loss_curve, strict=True):
        assert abs(one - two) <= 1e-4, (alone.metrics.loss_curve, pair.metrics.loss_curve)
    assert pair.metrics.eval_loss == pytest.approx(alone.metrics.eval_loss, abs=1e-4)
    assert pair.metrics.trained_tokens == alone.metrics.trained_tokens  # every row of every step, once
    assert_same_adapter(pair.adapter_path, alone.adapter_path)
    assert seen and seen[-1].step == 6  # rank 0's progress reaches the caller

    # Killed (every process) right after the step-4 checkpoint; a new pair resumes from it.
    killed_run = tiny_run(tiny_gguf, model_cache, tmp_path / "killed", train, evaluation, **TRAINING)
    spec = tmp_path / "killed.json"
    spec.write_text(DistributedRun.of(killed_run).model_dump_json())
    proc = subprocess.Popen(torchrun_command(spec, 2), stdout=subprocess.DEVNULL)
    checkpoints = killed_run.run_dir / "checkpoints"
    try:
        while proc.poll() is None and not (checkpoints / "step-0000004.safetensors").exists():
            time.sleep(0.01)
    finally:
        kill_process_tree(proc.pid)
        proc.wait()
    step = load_checkpoint(latest_checkpoint(checkpoints)).step  # type: ignore[arg-type]
    assert 4 <= step < 6, step
    resumed = train_distributed(killed_run, 2)
    assert resumed.resumed_from_step == step
    assert_same_adapter(resumed.adapter_path, alone.adapter_path)


@pytest.mark.anyio
async def test_the_gpu_agent_trains_data_parallel_when_the_plan_asks_for_processes(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path]
) -> None:
    train, evaluation = conversations
    settings = settings_factory(memory_url, model_cache_dir=model_cache)
    async with open_swarm(settings, [GpuOptimizationAgent]) as swarm:
        dataset, eval_dataset = await swarm.artifacts.put_file(train), await swarm.artifacts.put_file(evaluation)
        job = {
            "target": "general_health",
            "dataset": dataset.model_dump(by_alias=True),
            "eval_dataset": eval_dataset.model_dump(by_alias=True),
            "base_model": str(tiny_gguf),
            "training": {**TRAINING, "max_steps": 4, "learning_rate": 2e-3, "processes": 2},
        }
        plan = await swarm.client.call_model("gpu_optimization", "plan_training", job, TrainingPlan)
        trained = await swarm.client.call_model("gpu_optimization", "train", job, TrainOutput, timeout=600)
    assert plan.processes == 2
    assert any("data-parallel over 2 CPU processes" in r for r in plan.reasons), plan.reasons
    assert trained.plan.processes == 2 and trained.metrics.steps == 4
    assert trained.metrics.eval_loss < trained.metrics.eval_loss_base  # type: ignore[operator]
    assert (Path(trained.adapter_dir) / "distributed_run.json").is_file()  # the processes ran it
