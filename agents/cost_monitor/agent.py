"""The Cost Monitor's typed tool surface."""

from __future__ import annotations

import time

from agents.cost_monitor.ledger import Ledger
from protocol import InvalidParams, JobEvent
from protocol.agents.cost_monitor import (
    BudgetLimits,
    BudgetLimitsInput,
    BudgetStatus,
    BudgetStatusInput,
    CostReportInput,
    CostReportOutput,
    EstimateInput,
    EstimateOutput,
    PriceOffer,
    PriceTableInput,
    PriceTableOutput,
    RecordUsageInput,
    RecordUsageOutput,
    SetBudgetInput,
    UsageEntry,
)
from runtime import Agent, AgentContext, CallContext, tool


class CostMonitorAgent(Agent):
    """Knows what compute costs and what may be spent."""

    name = "cost_monitor"
    description = "Prices compute from the price table, keeps the ledger, enforces budgets and raises alerts."

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self.ledger = Ledger(ctx.records, ctx.catalog.budgets)

    def _rate(self, provider: str, gpu: str | None) -> float:
        catalog = self.ctx.catalog
        if provider == "local":
            return catalog.local_usd_per_hour
        if provider not in catalog.providers:
            raise InvalidParams(f"unknown provider {provider!r}", data={"known": ["local", *catalog.providers]})
        prices = catalog.providers[provider].prices
        if gpu not in prices:
            raise InvalidParams(f"provider {provider!r} has no price for GPU {gpu!r}", data={"known": sorted(prices)})
        return prices[gpu]

    @tool(idempotent=True)
    async def record_usage(self, params: RecordUsageInput, ctx: CallContext) -> RecordUsageOutput:
        """Price one compute step's usage and add it to the ledger (once per job, step and attempt).

        Publishes an alert event for every budget threshold the spending crosses.
        """
        rate = self._rate(params.provider, params.gpu)
        entry = UsageEntry(
            **params.model_dump(),
            usd_per_hour=rate,
            usd=round(params.seconds / 3600 * rate + (params.tokens.usd if params.tokens else 0.0), 6),
            at=time.time(),
        )
        stored, recorded = await self.ledger.add(entry)
        alerts = await self.ledger.new_alerts(await self.ledger.status()) if recorded else []
        for alert in alerts:
            self.log.warning("budget alert", alert=alert, job=params.job_id)
            await ctx.job_event(JobEvent(job_id=params.job_id, kind="alert", message=alert, data={"usd": stored.usd}))
        return RecordUsageOutput(entry=stored, recorded=recorded, alerts=alerts)

    @tool(read_only=True)
    async def cost_report(self, params: CostReportInput) -> CostReportOutput:
        """Spending in the current day, week, month or all time, grouped by job, domain, provider or step."""
        return await self.ledger.report(None if params.period == "all" else params.period, params.by)

    @tool(read_only=True)
    async def estimate(self, params: EstimateInput) -> EstimateOutput:
        """Price planned compute and say whether every budget would still hold after it."""
        rate = self._rate(params.provider, params.gpu)
        usd = round(params.hours * rate, 6)
        status = await self.ledger.status()
        reason = None
        for p in status.periods:
            if p.spent_usd + usd >= p.limit_usd * status.stop_threshold:
                reason = (
                    f"the {p.period} budget would be exceeded: ${p.spent_usd:.2f} spent + ${usd:.2f} estimated "
                    f"passes {status.stop_threshold:.0%} of ${p.limit_usd:.2f}"
                )
                break
        return EstimateOutput(usd=usd, usd_per_hour=rate, fits=reason is None, reason=reason)

    @tool(destructive=True, idempotent=True)
    async def set_budget(self, params: SetBudgetInput) -> BudgetStatus:
        """Set the daily, weekly or monthly budget in USD; returns the status under the new limit."""
        await self.ledger.set_limit(params.period, params.usd)
        self.log.info("budget set", period=params.period, usd=params.usd)
        return await self.ledger.status()

    @tool(read_only=True)
    async def budget_status(self, params: BudgetStatusInput) -> BudgetStatus:
        """Spending against each budget; ``stopped`` when one passed the stop threshold."""
        return await self.ledger.status()

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
        """The daily, weekly and monthly budgets in force and their alert thresholds."""
        b = self.ctx.catalog.budgets
        return BudgetLimits(
            day=await self.ledger.limit("day"),
            week=await self.ledger.limit("week"),
            month=await self.ledger.limit("month"),
            alert_thresholds=list(b.alert_thresholds),
            stop_threshold=b.stop_threshold,
        )
