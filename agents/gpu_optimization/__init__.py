"""GPU Optimization: the training host (device profile, run planning, LoRA training, provider pricing)."""

from agents.gpu_optimization.agent import GpuOptimizationAgent
from agents.gpu_optimization.device import profile_device

__all__ = ["GpuOptimizationAgent", "profile_device"]
