"""The Cost Monitor's typed tool surface."""

from __future__ import annotations

from protocol import InvalidParams
from protocol.agents.cost_monitor import (
    BudgetLimits,
    BudgetLimitsInput,
    PriceOffer,
    PriceTableInput,
    PriceTableOutput,
)
from runtime import Agent, tool


class CostMonitorAgent(Agent):
    """Knows what compute costs and what may be spent."""

    name = "cost_monitor"
    description = "GPU prices per provider and the configured budgets."

    @tool(read_only=True)
    async def price_table(self, params: PriceTableInput) -> PriceTableOutput:
        """GPU offers from the configured price table, cheapest first, filtered by GPU, memory or spot."""
        if params.gpu is not None and params.gpu not in self.ctx.catalog.gpus:
            raise InvalidParams(f"unknown GPU {params.gpu!r}", data={"known": sorted(self.ctx.catalog.gpus)})
        offers = []
        for key, provider in self.ctx.catalog.providers.items():
            if params.spot_only and not provider.spot:
                continue
            for gpu, price in provider.prices.items():
                memory = self.ctx.catalog.gpus[gpu].memory_gb
                if (params.gpu and gpu != params.gpu) or memory < params.min_memory_gb:
                    continue
                offers.append(
                    PriceOffer(
                        provider=key,
                        provider_name=provider.display_name,
                        gpu=gpu,
                        memory_gb=memory,
                        usd_per_hour=price,
                        spot=provider.spot,
                        max_session_hours=provider.max_session_hours,
                    )
                )
        offers.sort(key=lambda o: (o.usd_per_hour, o.provider, o.gpu))
        return PriceTableOutput(offers=offers, local_usd_per_hour=self.ctx.catalog.local_usd_per_hour)

    @tool(read_only=True)
    async def budget_limits(self, params: BudgetLimitsInput) -> BudgetLimits:
        """The configured daily, weekly and monthly budgets and their alert thresholds."""
        b = self.ctx.catalog.budgets
        return BudgetLimits(
            day=b.day,
            week=b.week,
            month=b.month,
            alert_thresholds=list(b.alert_thresholds),
            stop_threshold=b.stop_threshold,
        )
