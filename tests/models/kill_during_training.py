"""Run by the resume test in a child process: train, and SIGKILL ourselves right after a checkpoint."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from agents.gpu_optimization.trainer import run_training
from tests.models.training_helpers import tiny_run

base, cache, run_dir, train, kill_at = sys.argv[1:6]


def on_checkpoint(path: Path, step: int) -> None:
    if step == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


run_training(tiny_run(Path(base), Path(cache), Path(run_dir), Path(train), None), on_checkpoint=on_checkpoint)
raise SystemExit("unreachable: the process should have been killed")
