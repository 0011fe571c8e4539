"""Data-parallel training of one run over several processes: one per GPU of a host (NCCL), or CPU
processes (gloo), started by torchrun.

Every process holds the whole adapter and sees the same rows of each optimizer step; it runs only
its share of the step's micro-batches (micro-batch ``i`` on rank ``i % size``), and the gradients
are summed over the processes before the (identical) optimizer step, so a step's update equals
the one-process update on the same rows: the same global batch gives the same loss curve. Dropout
masks are drawn per micro-batch from the step and the micro-batch's index, not from the process.
Rank 0 alone writes checkpoints, the adapter and the metrics; every rank resumes from the same
checkpoint.

``python -m agents.gpu_optimization.distributed SPEC`` is what each process runs (``SPEC``: a
:class:`DistributedRun` as JSON); :func:`train_distributed` starts them and relays rank 0's progress.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from agents.gpu_optimization.world import current_world
from agents.llm.adapter_file import read_adapter
from agents.llm.base_model import BaseModelSource
from protocol import MeetaraError
from protocol.agents.gpu_optimization import TrainingMetrics, TrainingPlan
from runtime import atomic_write

if TYPE_CHECKING:
    from agents.gpu_optimization.trainer import TrainingProgress, TrainingResult, TrainingRun

__all__ = ["DistributedRun", "kill_process_tree", "torchrun_command", "train_distributed"]

_PROGRESS = "meetara-progress "
"""Prefix of rank 0's progress lines on its stdout."""
_STOP_FILE = "stop-requested"
_RESULT_FILE = "distributed_result.json"


class DistributedRun(BaseModel):
    """A :class:`TrainingRun` as the processes read it (paths, not loaded objects)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plan: TrainingPlan
    base_kind: Literal["gguf", "folder", "hub"]
    base_location: str
    base_name: str
    cache_dir: Path
    run_dir: Path
    train_path: Path
    eval_path: Path | None
    run_key: str
    warm_start: Path | None = None
    resume: bool = True

    @classmethod
    def of(cls, run: TrainingRun, warm_start: Path | None = None) -> DistributedRun:
        return cls(
            plan=run.plan,
            base_kind=run.base.kind,
            base_location=run.base.location,
            base_name=run.base.name,
            cache_dir=run.cache_dir,
            run_dir=run.run_dir,
            train_path=run.train_path,
            eval_path=run.eval_path,
            run_key=run.run_key,
            warm_start=warm_start,
            resume=run.resume,
        )

    def run(self) -> TrainingRun:
        from agents.gpu_optimization.trainer import TrainingRun

        return TrainingRun(
            plan=self.plan,
            base=BaseModelSource(kind=self.base_kind, location=self.base_location, name=self.base_name),
            cache_dir=self.cache_dir,
            run_dir=self.run_dir,
            train_path=self.train_path,
            eval_path=self.eval_path,
            run_key=self.run_key,
            warm_start=read_adapter(self.warm_start) if self.warm_start else None,
            resume=self.resume,
        )


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: TrainingMetrics
    adapter_path: Path
    resumed_from_step: int | None


def torchrun_command(spec: Path, processes: int) -> list[str]:
    """The command that trains ``spec`` on ``processes`` local processes (one per GPU on a GPU host)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "agents.gpu_optimization.distributed",
        str(spec),
    ]


def train_distributed(
    run: TrainingRun,
    processes: int,
    *,
    warm_start: Path | None = None,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Train ``run`` on ``processes`` processes of this host and wait; blocking, meant for a worker thread.

    Raises ``TrainingStopped`` when ``should_stop`` asked (the processes checkpoint first), and
    ``MeetaraError`` with the end of their output when they fail.
    """
    from agents.gpu_optimization.trainer import TrainingProgress, TrainingResult, TrainingStopped

    run.run_dir.mkdir(parents=True, exist_ok=True)
    spec = run.run_dir / "distributed_run.json"
    with atomic_write(spec) as f:
        f.write(DistributedRun.of(run, warm_start).model_dump_json())
    (run.run_dir / _STOP_FILE).unlink(missing_ok=True)
    (run.run_dir / _RESULT_FILE).unlink(missing_ok=True)
    proc = subprocess.Popen(
        torchrun_command(spec, processes),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C reaches the agent, which stops the run by its stop file
    )
    tail: list[str] = []
    watcher = threading.Thread(target=_relay_stop, args=(proc, run.run_dir, should_stop), daemon=True)
    watcher.start()
    with proc:  # closes its output pipe
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(_PROGRESS):
                    if on_progress is not None:
                        on_progress(TrainingProgress(**json.loads(line.removeprefix(_PROGRESS))))
                    continue
                tail = [*tail[-40:], line]
            code = proc.wait()
        except BaseException:
            kill_process_tree(proc.pid)
            raise
    result_path = run.run_dir / _RESULT_FILE
    if code == 0 and result_path.is_file():
        result = _Result.model_validate_json(result_path.read_text())
        return TrainingResult(result.metrics, result.adapter_path, result.resumed_from_step)
    stopped = json.loads(result_path.read_text()).get("stopped_at") if result_path.is_file() else None
    if stopped is not None:
        raise TrainingStopped(int(stopped))
    raise MeetaraError(f"distributed training failed (exit {code}): {''.join(tail)[-2000:]}")


def kill_process_tree(pid: int) -> None:
    """SIGKILL a process and every process under it: torchrun starts its workers in sessions of
    their own, so killing torchrun's process group would leave them training."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(tree, timeout=30)


def _relay_stop(proc: subprocess.Popen[str], run_dir: Path, should_stop: Callable[[], bool] | None) -> None:
    """Turn the caller's stop request into the stop file rank 0 looks for."""
    while proc.poll() is None:
        if should_stop is not None and should_stop():
            (run_dir / _STOP_FILE).touch()
            return
        threading.Event().wait(0.5)


def _main(spec_path: Path) -> None:
    import torch
    import torch.distributed as dist

    from agents.gpu_optimization.trainer import TrainingStopped, run_training

    spec = DistributedRun.model_validate_json(spec_path.read_text())
    cuda = torch.cuda.is_available() and spec.plan.device.kind == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    world = current_world()
    stop_file = spec.run_dir / _STOP_FILE

    def report(progress: TrainingProgress) -> None:
        fields = {k: getattr(progress, k) for k in ("step", "max_steps", "loss", "tokens_per_second", "eta_s")}
        print(_PROGRESS + json.dumps(fields), flush=True)

    try:
        result = run_training(spec.run(), on_progress=report, should_stop=stop_file.exists)
    except TrainingStopped as stopped:
        if world.main:
            with atomic_write(spec.run_dir / _RESULT_FILE) as f:
                f.write(json.dumps({"stopped_at": stopped.step}))
        dist.destroy_process_group()
        raise SystemExit(3) from None
    if world.main:
        payload = _Result(
            metrics=result.metrics, adapter_path=result.adapter_path, resumed_from_step=result.resumed_from_step
        )
        with atomic_write(spec.run_dir / _RESULT_FILE) as f:
            f.write(payload.model_dump_json())
    dist.destroy_process_group()


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
