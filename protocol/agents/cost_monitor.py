"""Tool models of the Cost Monitor agent."""

from __future__ import annotations

from pydantic import Field

from protocol._base import ToolModel

__all__ = ["BudgetLimits", "BudgetLimitsInput", "PriceOffer", "PriceTableInput", "PriceTableOutput"]


class PriceTableInput(ToolModel):
    """Arguments of ``cost_monitor.price_table``."""

    gpu: str | None = Field(default=None, max_length=64)
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
