"""Training checkpoints: adapter weights, optimizer moments and loop state in one safetensors file.

Nothing is pickled: tensors go in the safetensors body, everything else as JSON in its header.
Files are written atomically and only the newest few are kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import atomic_write

if TYPE_CHECKING:
    import torch

__all__ = ["Checkpoint", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

_NAME = re.compile(r"^step-(\d{7})\.safetensors$")
_FORMAT = "meetara-checkpoint-1"


@dataclass(slots=True)
class Checkpoint:
    step: int
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    state: dict[str, Any] = field(default_factory=dict)
    """Loop counters and history (tokens, loss curve, micro-batch…)."""


def _path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:07d}.safetensors"


def save_checkpoint(folder: Path, checkpoint: Checkpoint, *, keep: int = 2) -> Path:
    from safetensors.torch import save

    tensors = {f"adapter.{k}": v.detach().cpu().contiguous() for k, v in checkpoint.adapter.items()}
    groups = []
    for group in checkpoint.optimizer["param_groups"]:
        groups.append({k: v for k, v in group.items() if k != "params"} | {"params": list(group["params"])})
    scalars: dict[str, dict[str, float]] = {}
    for index, moments in checkpoint.optimizer["state"].items():
        for key, value in moments.items():
            if hasattr(value, "dim") and value.dim() > 0:
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = float(value)
    metadata = {
        "format": _FORMAT,
        "step": str(checkpoint.step),
        "param_groups": json.dumps(groups),
        "optim_scalars": json.dumps(scalars),
        "scaler": json.dumps(checkpoint.scaler),
        "state": json.dumps(checkpoint.state),
    }
    path = _path(folder, checkpoint.step)
    with atomic_write(path, binary=True) as f:
        f.write(save(tensors, metadata=metadata))
    for old in sorted(p for p in folder.iterdir() if _NAME.match(p.name))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if _NAME.match(p.name))
    return found[-1] if found else None


def load_checkpoint(path: Path) -> Checkpoint:
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != _FORMAT:
            raise ValueError(f"{path.name} is not a training checkpoint")
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    adapter = {k.removeprefix("adapter."): v for k, v in tensors.items() if k.startswith("adapter.")}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in json.loads(metadata["optim_scalars"]).items():
        for name, value in values.items():
            state.setdefault(int(index), {})[name] = torch.tensor(value)
    optimizer = {"state": state, "param_groups": json.loads(metadata["param_groups"])}
    return Checkpoint(
        step=int(metadata["step"]),
        adapter=adapter,
        optimizer=optimizer,
        scaler=json.loads(metadata["scaler"]),
        state=json.loads(metadata["state"]),
    )
