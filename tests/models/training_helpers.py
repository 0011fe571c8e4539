"""Building small training runs on the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.gpu_optimization.device import profile_device
from agents.gpu_optimization.planning import plan_training
from agents.gpu_optimization.trainer import TrainingRun
from agents.llm.base_model import resolve_base_model
from protocol import ArtifactRef
from protocol.agents.gpu_optimization import TrainInput
from runtime import load_catalog

PLACEHOLDER = ArtifactRef(uri="file:///unused", sha256="0" * 64, size=0)


def tiny_run(
    base: Path, cache: Path, run_dir: Path, train: Path, evaluation: Path | None, **training: Any
) -> TrainingRun:
    overrides = {"max_steps": 6, "effective_batch": 4, "micro_batch": 2, "learning_rate": 2e-3, "checkpoint_every": 2}
    overrides.update(training)
    job = TrainInput(target="general_health", dataset=PLACEHOLDER, base_model=str(base), training=overrides)
    plan = plan_training(job, profile_device(), load_catalog())
    return TrainingRun(
        plan=plan,
        base=resolve_base_model(str(base)),
        cache_dir=cache,
        run_dir=run_dir,
        train_path=train,
        eval_path=evaluation,
        run_key="test-run",
    )
