"""Which base a job trains on, chosen when it is submitted: its own, its tier's, or the pip-shipped one."""

from __future__ import annotations

from typing import ClassVar

import pytest

from agents.conductor.planning import plan_job
from agents.conductor.settings import load_job_settings
from protocol import InvalidParams
from protocol.agents.conductor import JobSpec
from protocol.agents.gpu_optimization import CheckBaseInput, CheckBaseOutput, DeviceProfile, ProfileDeviceInput
from runtime import Agent, Settings, ToolError, load_catalog, open_swarm, tool

pytestmark = pytest.mark.anyio

QUALITY_BASE = "Qwen/Qwen2.5-14B-Instruct"


class GpuHost(Agent):
    """A GPU host whose disk holds the bases in ``present``; every check is recorded."""

    name = "gpu_optimization"
    kind: ClassVar[str] = "cuda"
    present: ClassVar[set[str | None]] = set()
    checked: ClassVar[list[str | None]] = []
    broken: ClassVar[bool] = False

    @tool(read_only=True)
    async def profile_device(self, params: ProfileDeviceInput) -> DeviceProfile:
        """An H100, or a CPU."""
        cuda = self.kind == "cuda"
        return DeviceProfile(
            kind=self.kind,  # type: ignore[arg-type]
            name="H100" if cuda else "EPYC",
            memory_gb=80 if cuda else 24,
            compute_capability="9.0" if cuda else None,
            bf16=cuda,
            device_count=int(cuda),
            cpu_threads=16,
            torch_version="2",
        )

    @tool(read_only=True)
    async def check_base_model(self, params: CheckBaseInput) -> CheckBaseOutput:
        """Found when present."""
        self.checked.append(params.base_model)
        if self.broken:
            raise ToolError("the model cache cannot be read")
        if params.base_model in self.present:
            return CheckBaseOutput(ok=True, architecture="qwen2" if params.base_model else "llama")
        return CheckBaseOutput(ok=False, reason=f"base model not found: {params.base_model}")


async def _plan(settings: Settings, kind: str, present: set[str | None], broken: bool = False, **spec: object):  # type: ignore[no-untyped-def]
    GpuHost.kind, GpuHost.present, GpuHost.checked, GpuHost.broken = kind, present, [], broken
    job = JobSpec.model_validate({"scope": "domain", "target": "general_health", **spec})
    async with open_swarm(settings, [GpuHost]) as swarm:
        return await plan_job(job, ["general_health"], swarm.client, load_catalog(), load_job_settings(), [])


async def test_a_gpu_host_with_the_tiers_base_trains_on_it(settings: Settings) -> None:
    plan = await _plan(settings, "cuda", {QUALITY_BASE, None}, tier="quality")
    assert plan.base_model == QUALITY_BASE and GpuHost.checked == [QUALITY_BASE]
    assert f"base model: the quality tier's {QUALITY_BASE}" in plan.reasons


async def test_a_gpu_host_without_the_tiers_base_says_so_and_trains_the_default(settings: Settings) -> None:
    plan = await _plan(settings, "cuda", {None}, tier="quality")
    assert plan.base_model is None and GpuHost.checked == [QUALITY_BASE, None]
    (reason,) = [r for r in plan.reasons if r.startswith("base model: the quality tier's")]
    assert "is not usable on the GPU host (base model not found" in reason
    assert "the default SmolLM2-135M-Instruct instead" in reason
    # A check that is not answered does not count as the base being there.
    plan = await _plan(settings, "cuda", {QUALITY_BASE, None}, broken=True, tier="quality")
    assert plan.base_model is None and GpuHost.checked == [QUALITY_BASE, None]
    assert any("GPU Optimization did not answer" in r for r in plan.reasons), plan.reasons


async def test_a_cpu_host_trains_the_default_and_a_named_base_wins_everywhere(settings: Settings) -> None:
    plan = await _plan(settings, "cpu", {QUALITY_BASE, None}, tier="quality")
    assert plan.base_model is None and GpuHost.checked == [None]  # a 14B base is not tried on a CPU
    assert any(
        r.startswith("base model: the default SmolLM2-135M-Instruct, not the quality tier's") for r in plan.reasons
    )
    plan = await _plan(settings, "cuda", {"/models/mine", QUALITY_BASE}, tier="quality", base_model="/models/mine")
    assert plan.base_model == "/models/mine" and GpuHost.checked == ["/models/mine"]
    with pytest.raises(InvalidParams, match=r"base model refused: base model not found: /models/gone"):
        await _plan(settings, "cuda", {QUALITY_BASE}, tier="quality", base_model="/models/gone")
