"""Cost Monitor: prices, budgets and (later) the compute ledger."""

from agents.cost_monitor.agent import CostMonitorAgent

__all__ = ["CostMonitorAgent"]
