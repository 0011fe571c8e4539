"""A training host is priced as what it is: own hardware at the local rate, a rented GPU at its provider's."""

from __future__ import annotations

import pytest

import agents.gpu_optimization.agent as gpu_agent_module
from agents.conductor.planning import plan_job
from agents.conductor.settings import load_job_settings
from agents.cost_monitor import CostMonitorAgent
from agents.gpu_optimization import GpuOptimizationAgent, profile_device
from agents.gpu_optimization.pricing import host_pricing, price_table_gpu
from protocol import MeetaraError
from protocol.agents.conductor import JobSpec
from protocol.agents.cost_monitor import EstimateOutput
from protocol.agents.gpu_optimization import DeviceProfile
from runtime import load_catalog, open_swarm

pytestmark = pytest.mark.anyio

TYPES = ["T4", "V100", "A100", "RTX_4090", "H100"]


@pytest.mark.parametrize(
    ("device", "gpu"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 NVL", "H100"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA GeForce RTX 4090", "RTX_4090"),
        ("Tesla T4", "T4"),
        ("Tesla V100-PCIE-16GB", "V100"),
        ("NVIDIA H200", None),  # not in the table: the host must say what it is billed as
        ("NVIDIA A10G", None),  # a whole word, not a prefix of A100
        ("NVIDIA RTX A6000", None),
    ],
)
def test_a_detected_gpu_name_is_matched_to_its_price_table_type_by_whole_words(device: str, gpu: str | None) -> None:
    assert price_table_gpu(device, TYPES) == gpu


def _device(kind: str, name: str) -> DeviceProfile:
    return DeviceProfile(
        kind=kind,  # type: ignore[arg-type]
        name=name,
        memory_gb=80,
        compute_capability="9.0" if kind == "cuda" else None,
        bf16=kind == "cuda",
        device_count=1,
        cpu_threads=16,
        torch_version="2",
    )


def test_a_host_is_priced_local_or_at_a_provider_rate_and_a_wrong_setting_says_what_to_set() -> None:
    catalog = load_catalog()
    h100 = _device("cuda", "NVIDIA H100 80GB HBM3")
    assert host_pricing("local", None, h100, catalog) == ("local", None)
    assert host_pricing("lambda_labs", None, h100, catalog) == ("lambda_labs", "H100")
    assert host_pricing("runpod", "A100", _device("cpu", "EPYC"), catalog) == ("runpod", "A100")
    with pytest.raises(ValueError, match=r"MEETARA_PROVIDER is .local..*set MEETARA_PROVIDER"):
        host_pricing("local", "H100", h100, catalog)
    with pytest.raises(ValueError, match="'coreweave' is not in the price table; known: local, colab_pro_plus"):
        host_pricing("coreweave", None, h100, catalog)
    with pytest.raises(ValueError, match=r"runpod has no price for the detected H100; it prices A100, RTX_4090"):
        host_pricing("runpod", None, h100, catalog)  # the detected H100 is matched, and RunPod does not price it
    with pytest.raises(ValueError, match="vast_ai has no price for MEETARA_GPU='H100'; it prices A100, RTX_4090"):
        host_pricing("vast_ai", "H100", h100, catalog)
    with pytest.raises(ValueError, match=r"'EPYC' matches none of the price table's GPU types.*set MEETARA_GPU"):
        host_pricing("vast_ai", None, _device("cpu", "EPYC"), catalog)


async def test_a_rented_host_plans_and_prices_its_jobs_at_its_providers_rate(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(memory_url, provider="lambda_labs", gpu="H100")
    async with open_swarm(settings, [GpuOptimizationAgent, CostMonitorAgent]) as swarm:
        profile = await swarm.client.call_model("gpu_optimization", "profile_device", {}, DeviceProfile)
        job = JobSpec.model_validate({"scope": "domain", "target": "general_health"})
        plan = await plan_job(job, ["general_health"], swarm.client, load_catalog(), load_job_settings(), [])
        estimate = await swarm.client.call_model(
            "cost_monitor", "estimate", {"hours": 2.0, "provider": plan.provider, "gpu": plan.gpu}, EstimateOutput
        )
    assert profile == profile_device().model_copy(update={"provider": "lambda_labs", "gpu": "H100"})
    assert (plan.provider, plan.gpu) == ("lambda_labs", "H100")
    assert f"{profile.name} is rented from lambda_labs as H100: its hours are priced at that rate" in plan.reasons
    assert estimate.usd == pytest.approx(2 * 1.99)


async def test_a_host_that_would_be_priced_wrongly_refuses_to_start(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    epyc = _device("cpu", "EPYC")  # names no GPU type, whatever this machine has
    monkeypatch.setattr(gpu_agent_module, "profile_device", lambda: epyc)
    settings = settings_factory(memory_url, provider="vast_ai")
    with pytest.raises(MeetaraError, match=r"gpu_optimization cannot start: the device .* set MEETARA_GPU"):
        async with open_swarm(settings, [GpuOptimizationAgent]):
            pass
