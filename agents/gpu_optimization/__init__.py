"""GPU Optimization: the training host (device profile now; planning and training later)."""

from agents.gpu_optimization.agent import GpuOptimizationAgent
from agents.gpu_optimization.device import profile_device

__all__ = ["GpuOptimizationAgent", "profile_device"]
