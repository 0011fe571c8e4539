"""The agents that exist at the foundation stage, called over the bus."""

from __future__ import annotations

import pytest

from agents.conductor import ConductorAgent
from agents.cost_monitor import CostMonitorAgent
from agents.gpu_optimization import GpuOptimizationAgent, profile_device
from protocol import InvalidParams
from protocol.agents.conductor import DomainInfo, ListDomainsOutput
from protocol.agents.cost_monitor import BudgetLimits, PriceTableOutput
from protocol.agents.gpu_optimization import DeviceProfile
from runtime import open_swarm

pytestmark = pytest.mark.anyio

AGENTS = [ConductorAgent, CostMonitorAgent, GpuOptimizationAgent]


async def test_conductor_catalogue_tools(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), AGENTS) as swarm:
        everything = await swarm.client.call_model("conductor", "list_domains", {}, ListDomainsOutput)
        assert len(everything.domains) == 62 and len(everything.categories) == 7
        healthcare = await swarm.client.call_model(
            "conductor", "list_domains", {"category": "healthcare"}, ListDomainsOutput
        )
        assert len(healthcare.domains) == 12
        assert all(d.quality_target == 99.5 and d.crisis_safety for d in healthcare.domains)
        sleep = await swarm.client.call_model("conductor", "describe_domain", {"name": "sleep"}, DomainInfo)
        assert sleep.category == "healthcare"
        with pytest.raises(InvalidParams, match="unknown category 'bussiness'; did you mean 'business'"):
            await swarm.client.call("conductor", "list_domains", {"category": "bussiness"})


async def test_cost_monitor_price_table_and_budgets(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), AGENTS) as swarm:
        a100 = await swarm.client.call_model("cost_monitor", "price_table", {"gpu": "A100"}, PriceTableOutput)
        assert [(o.provider, o.usd_per_hour) for o in a100.offers] == [
            ("vast_ai", 0.59),
            ("runpod", 0.79),
            ("lambda_labs", 1.29),
            ("colab_pro_plus", 3.67),
        ]
        big = await swarm.client.call_model(
            "cost_monitor", "price_table", {"min_memory_gb": 40, "spot_only": True}, PriceTableOutput
        )
        assert {o.gpu for o in big.offers} == {"A100", "H100"} and all(o.spot for o in big.offers)
        limits = await swarm.client.call_model("cost_monitor", "budget_limits", {}, BudgetLimits)
        assert (limits.day, limits.week, limits.month) == (5.0, 25.0, 50.0)


async def test_gpu_optimization_profiles_this_machine(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), AGENTS) as swarm:
        profile = await swarm.client.call_model("gpu_optimization", "profile_device", {}, DeviceProfile)
    assert profile == profile_device()
    assert profile.cpu_threads >= 1
    if profile.kind == "cpu":
        assert not profile.bf16 and profile.compute_capability is None
