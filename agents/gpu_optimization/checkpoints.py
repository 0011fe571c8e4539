"""Training checkpoints: adapter weights, optimizer moments and loop state in one safetensors file.

Nothing is pickled: tensors go in the safetensors body, everything else as JSON in its header.
Files are written atomically and only the newest few are kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from runtime import ToolError, atomic_write

if TYPE_CHECKING:
    import torch

__all__ = [
    "Checkpoint",
    "TrainingState",
    "UnusableCheckpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

_NAME = re.compile(r"^step-(\d{7})\.safetensors$")
_FORMAT = "meetara-checkpoint-1"


class UnusableCheckpoint(ToolError):
    """A checkpoint file cannot be resumed (not a checkpoint, or a header this code cannot read)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"cannot resume from {path}: {problem}; delete it, or train with resume off, to start over")
        self.path = path


class TrainingState(BaseModel):
    """The loop's counters and history, as JSON in each checkpoint's header.

    The learning rate, the dropout seed and the rows of a step are functions of the step (and the
    plan), so the checkpoint's step restores them and they are not stored.
    """

    model_config = ConfigDict(extra="forbid")

    run_key: str
    """The run this belongs to: another run's checkpoint is never resumed."""
    micro_batch: int | None = None
    """Rows per forward pass, once chosen: a resumed run does not probe again."""
    tokens: int = 0
    """Tokens fed, padding excluded."""
    trained_tokens: int = 0
    """Tokens that carried loss."""
    computed: int = 0
    """Positions computed, padding included (for the padding fraction)."""
    curve: list[tuple[int, float]] = []
    """(step, mean loss) of every step so far."""
    decision_curve: list[tuple[int, float]] = []
    """(step, crisis-decision loss) of every step so far, when the plan weighs it."""
    eval_loss_base: float | None = None
    """Held-out loss of the base model, measured once per run."""


@dataclass(slots=True)
class Checkpoint:
    step: int
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    state: TrainingState


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
        "state": checkpoint.state.model_dump_json(),
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
    """The checkpoint in ``path``.

    Raises:
        UnusableCheckpoint: the file is no checkpoint, or its header does not hold what this code needs.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise UnusableCheckpoint(path, f"its format is {metadata.get('format')!r}, not {_FORMAT!r}")
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError) as exc:
        raise UnusableCheckpoint(path, f"it is not a readable safetensors file ({exc})") from exc
    try:
        return _decode(metadata, tensors)
    except KeyError as exc:
        raise UnusableCheckpoint(path, f"its header lacks {exc}") from exc
    except (ValueError, TypeError) as exc:  # ValidationError is a ValueError: it names the bad fields
        reason = _one_line(exc) if isinstance(exc, ValidationError) else str(exc)
        raise UnusableCheckpoint(path, f"its header is not valid: {reason}") from exc


def _one_line(error: ValidationError) -> str:
    """The state's bad fields on one line (pydantic's own text spans lines and links to its docs)."""
    return "; ".join(".".join(map(str, ("state", *e["loc"]))) + f": {e['msg']}" for e in error.errors())


def _decode(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> Checkpoint:
    import torch

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
        state=TrainingState.model_validate_json(metadata["state"]),
    )
