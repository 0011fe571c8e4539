"""Tool models of the Cost Monitor agent."""

from __future__ import annotations

from typing import Literal, TypeAlias

from pydantic import Field

from protocol._base import CatalogName, Identifier, Label, Name, ToolModel

__all__ = [
    "BudgetLimits",
    "BudgetLimitsInput",
    "BudgetPeriodStatus",
    "BudgetStatus",
    "BudgetStatusInput",
    "CostReportInput",
    "CostReportOutput",
    "CostRow",
    "EstimateInput",
    "EstimateOutput",
    "Period",
    "PriceOffer",
    "PriceTableInput",
    "PriceTableOutput",
    "RecordUsageInput",
    "RecordUsageOutput",
    "TokenUsage",
    "SetBudgetInput",
    "UsageEntry",
]


class PriceTableInput(ToolModel):
    """Arguments of ``cost_monitor.price_table``."""

    gpu: Label | None = None
    """Only offers of this GPU type (``T4``, ``A100``…)."""
    min_memory_gb: float = Field(default=0, ge=0)
    """Only GPUs with at least this much memory."""
    spot_only: bool = False
    """Only interruptible (spot) offers."""


class PriceOffer(ToolModel):
    """One GPU at one provider."""

    provider: str
    """Provider key in the price table."""
    provider_name: str
    """Provider display name."""
    gpu: str
    """GPU type."""
    memory_gb: float
    """GPU memory."""
    usd_per_hour: float
    """Price per GPU-hour."""
    spot: bool
    """Interruptible capacity."""
    max_session_hours: float | None
    """Longest session the provider allows, when limited."""


class PriceTableOutput(ToolModel):
    """Result of ``cost_monitor.price_table``: cheapest first."""

    offers: list[PriceOffer]
    """Matching offers sorted by price."""
    local_usd_per_hour: float
    """The configured hourly rate of local machines."""


class BudgetLimitsInput(ToolModel):
    """Arguments of ``cost_monitor.budget_limits`` (none)."""


class BudgetLimits(ToolModel):
    """Result of ``cost_monitor.budget_limits``: the configured limits."""

    day: float
    """Daily budget in USD."""
    week: float
    """Weekly budget in USD."""
    month: float
    """Monthly budget in USD."""
    alert_thresholds: list[float]
    """Fractions of a budget at which alerts fire."""
    stop_threshold: float
    """Fraction at which running work stops and new work is refused."""


Period: TypeAlias = Literal["day", "week", "month"]
"""A budget period: the current UTC calendar day, ISO week or month."""


class TokenUsage(ToolModel):
    """Tokens an LLM endpoint reported for a step, and what they cost at its prices."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    usd: float = Field(default=0.0, ge=0)


class RecordUsageInput(ToolModel):
    """Arguments of ``cost_monitor.record_usage``: one compute step's usage."""

    job_id: Identifier
    step: Name
    attempt: int = Field(default=1, ge=1)
    """Attempt of the step; one ledger entry per (job, step, attempt) however often it is reported."""
    agent: Name
    target: CatalogName | Literal[""] = ""
    """Domain or category the job trains, for reports by domain."""
    device: str = Field(default="cpu", max_length=200)
    """Where it ran (``cpu``, ``NVIDIA H100 80GB HBM3``…)."""
    provider: Label = "local"
    """Price-table provider key, or ``local`` for own machines."""
    gpu: Label | None = None
    """Price-table GPU type when rented."""
    seconds: float = Field(ge=0)
    tokens: TokenUsage | None = None
    """LLM tokens the step paid for (a teacher's), priced by the caller at the endpoint's rates."""


class UsageEntry(ToolModel):
    """One priced ledger entry."""

    job_id: str
    step: str
    attempt: int
    agent: str
    target: str
    device: str
    provider: str
    gpu: str | None
    seconds: float
    usd_per_hour: float
    usd: float
    """Compute (seconds at ``usd_per_hour``) plus LLM tokens."""
    at: float
    """When it was recorded (epoch seconds)."""
    tokens: TokenUsage | None = None
    """LLM tokens the step paid for, when any."""


class RecordUsageOutput(ToolModel):
    """Result of ``cost_monitor.record_usage``."""

    entry: UsageEntry
    recorded: bool
    """False when this (job, step, attempt) was already in the ledger (the stored entry is returned)."""
    alerts: list[str]
    """Budget thresholds this entry crossed."""


class CostReportInput(ToolModel):
    """Arguments of ``cost_monitor.cost_report``."""

    period: Period | Literal["all"] = "month"
    by: Literal["job", "domain", "provider", "step"] = "job"


class CostRow(ToolModel):
    key: str
    usd: float
    seconds: float
    entries: int
    tokens: int = 0
    """LLM tokens (prompt and completion) paid for."""


class CostReportOutput(ToolModel):
    """Spending grouped as asked, largest first."""

    period: str
    since: float | None
    """Start of the period (epoch seconds); ``None`` for all time."""
    rows: list[CostRow]
    total_usd: float


class EstimateInput(ToolModel):
    """Arguments of ``cost_monitor.estimate``: compute a job plans to use."""

    hours: float = Field(ge=0, le=10_000)
    """Estimated compute hours."""
    provider: Label = "local"
    gpu: Label | None = None


class EstimateOutput(ToolModel):
    """What the plan would cost and whether every budget still holds afterwards."""

    usd: float
    usd_per_hour: float
    fits: bool
    """False when spending so far plus this estimate would pass the stop threshold of a budget."""
    reason: str | None
    """Which budget it would break, when it does not fit."""


class SetBudgetInput(ToolModel):
    """Arguments of ``cost_monitor.set_budget``."""

    period: Period
    usd: float = Field(ge=0, le=1_000_000)


class BudgetPeriodStatus(ToolModel):
    period: Period
    limit_usd: float
    spent_usd: float
    fraction: float
    """Spent / limit (1.0 and above: the budget is used up)."""
    since: float
    """Start of the current period (epoch seconds)."""


class BudgetStatusInput(ToolModel):
    """Arguments of ``cost_monitor.budget_status`` (none)."""


class BudgetStatus(ToolModel):
    """Spending against every budget."""

    periods: list[BudgetPeriodStatus]
    stopped: bool
    """True when some budget passed the stop threshold: running work pauses, new work is refused."""
    stop_threshold: float
