"""Detecting the accelerator this process would train on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from protocol.agents.gpu_optimization import DeviceProfile

__all__ = ["profile_device"]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _system_memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_profile(torch_version: str | None) -> DeviceProfile:
    return DeviceProfile(
        kind="cpu",
        name=_cpu_name(),
        memory_gb=_system_memory_gb(),
        compute_capability=None,
        bf16=False,
        device_count=1,
        cpu_threads=_cpu_threads(),
        torch_version=torch_version,
    )


def profile_device() -> DeviceProfile:
    """CUDA if PyTorch sees a GPU, else Apple MPS, else the CPU (fp32 training)."""
    try:
        import torch
    except ImportError:
        return _cpu_profile(None)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return DeviceProfile(
            kind="cuda",
            name=props.name,
            memory_gb=round(props.total_memory / 2**30, 2),
            compute_capability=f"{props.major}.{props.minor}",
            bf16=bool(torch.cuda.is_bf16_supported()),
            device_count=torch.cuda.device_count(),
            cpu_threads=_cpu_threads(),
            torch_version=torch.__version__,
        )
    if torch.backends.mps.is_available():
        return DeviceProfile(
            kind="mps",
            name="Apple MPS",
            memory_gb=_system_memory_gb(),
            compute_capability=None,
            bf16=False,
            device_count=1,
            cpu_threads=_cpu_threads(),
            torch_version=torch.__version__,
        )
    return _cpu_profile(torch.__version__)
