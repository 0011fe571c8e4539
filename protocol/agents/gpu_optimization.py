"""Tool models of the GPU Optimization agent."""

from __future__ import annotations

from typing import Literal

from protocol._base import ToolModel

__all__ = ["DeviceProfile", "ProfileDeviceInput"]


class ProfileDeviceInput(ToolModel):
    """Arguments of ``gpu_optimization.profile_device`` (none)."""


class DeviceProfile(ToolModel):
    """The accelerator this instance trains on, as detected."""

    kind: Literal["cuda", "mps", "cpu"]
    """Device family used for training."""
    name: str
    """Device name (GPU model, or the CPU model)."""
    memory_gb: float | None
    """Device memory (system memory for CPU), when known."""
    compute_capability: str | None
    """CUDA compute capability (``8.0``…), for CUDA devices."""
    bf16: bool
    """Whether bfloat16 math is supported natively."""
    device_count: int
    """Number of devices of this kind."""
    cpu_threads: int
    """CPU threads available to this process."""
    torch_version: str | None
    """Installed PyTorch version; ``None`` when PyTorch is not installed."""
