"""The GPU Optimization agent's typed tool surface."""

from __future__ import annotations

import anyio

from agents.gpu_optimization.device import profile_device
from protocol.agents.gpu_optimization import DeviceProfile, ProfileDeviceInput
from runtime import Agent, tool


class GpuOptimizationAgent(Agent):
    """The training host: knows its device."""

    name = "gpu_optimization"
    description = "The GPU host: device profile (training arrives with the model issue)."
    concurrency = 1

    @tool(read_only=True)
    async def profile_device(self, params: ProfileDeviceInput) -> DeviceProfile:
        """Detect this instance's accelerator: kind, name, memory, compute capability, bf16, threads."""
        # Importing torch and querying CUDA can take seconds; keep the event loop free.
        return await anyio.to_thread.run_sync(profile_device)
