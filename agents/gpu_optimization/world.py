"""The processes training one run together (data-parallel, see ``distributed``), as the trainer sees them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["World", "current_world"]


@dataclass(frozen=True, slots=True)
class World:
    """This process's place among the processes training one run (rank 0 of 1 when alone)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Each parameter's gradient summed over the processes (a process with no micro-batch adds zeros)."""
        if self.size == 1:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective, not one per tensor
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def sum(self, *values: float) -> list[float]:
        if self.size == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        total = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(total)
        return [float(v) for v in total.cpu()]

    def min(self, value: int) -> int:
        if self.size == 1:
            return value
        import torch
        import torch.distributed as dist

        least = torch.tensor([value], dtype=torch.int64, device=_collective_device())
        dist.all_reduce(least, op=dist.ReduceOp.MIN)
        return int(least.item())

    def any(self, flag: bool) -> bool:
        return self.sum(1.0 if flag else 0.0)[0] > 0


def _collective_device() -> str:
    import torch.distributed as dist

    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def current_world() -> World:
    """The process group torchrun set up, when there is one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()
