"""The usage ledger and budgets, persisted as keys on the bus's transport (Redis or in-memory).

One key per (job, step, attempt) makes reporting idempotent: a step reported twice after a
crash is one entry. Budget overrides and alerts already sent live beside the entries.
"""

from __future__ import annotations

import calendar
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from bus import Bus
from protocol.agents.cost_monitor import (
    BudgetPeriodStatus,
    BudgetStatus,
    CostReportOutput,
    CostRow,
    Period,
    UsageEntry,
)
from runtime import Budgets

__all__ = ["PERIODS", "Ledger", "period_start"]

PERIODS: tuple[Period, ...] = ("day", "week", "month")


def period_start(period: Period, at: float) -> float:
    """Start (epoch seconds) of the UTC calendar day, ISO week or month containing ``at``."""
    moment = datetime.fromtimestamp(at, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return calendar.timegm(day.timetuple())


class Ledger:
    """Entries, budgets and sent alerts under ``{namespace}:cost:*``."""

    def __init__(self, bus: Bus, defaults: Budgets) -> None:
        self._bus = bus
        self._defaults = defaults

    def _key(self, *parts: str) -> str:
        return self._bus.keys.stream(":".join(("cost", *parts)))

    async def add(self, entry: UsageEntry) -> tuple[UsageEntry, bool]:
        """Store ``entry`` unless its (job, step, attempt) is already there; returns the stored one."""
        key = self._key("entry", entry.job_id, entry.step, str(entry.attempt))
        transport = self._bus.transport
        if await transport.set(key, entry.model_dump_json().encode(), nx=True):
            return entry, True
        raw = await transport.get(key)
        return (UsageEntry.model_validate_json(raw), False) if raw is not None else (entry, False)

    async def entries(self, since: float | None = None) -> list[UsageEntry]:
        transport = self._bus.transport
        keys = await transport.scan(self._key("entry", "*"))
        rows = [UsageEntry.model_validate_json(raw) for raw in await transport.get_many(keys) if raw is not None]
        return [e for e in rows if since is None or e.at >= since]

    async def limit(self, period: Period) -> float:
        raw = await self._bus.transport.get(self._key("budget", period))
        return float(raw) if raw is not None else float(getattr(self._defaults, period))

    async def set_limit(self, period: Period, usd: float) -> None:
        await self._bus.transport.set(self._key("budget", period), repr(float(usd)).encode())

    async def status(self, now: float | None = None) -> BudgetStatus:
        now = time.time() if now is None else now
        entries = await self.entries(period_start("month", now) - 7 * 86400)  # a week can start last month
        periods = []
        for period in PERIODS:
            since = period_start(period, now)
            spent = round(sum(e.usd for e in entries if e.at >= since), 6)
            limit = await self.limit(period)
            fraction = spent / limit if limit > 0 else (0.0 if spent == 0 else float("inf"))
            periods.append(
                BudgetPeriodStatus(period=period, limit_usd=limit, spent_usd=spent, fraction=fraction, since=since)
            )
        stop = self._defaults.stop_threshold
        return BudgetStatus(periods=periods, stopped=any(p.fraction >= stop for p in periods), stop_threshold=stop)

    async def new_alerts(self, status: BudgetStatus) -> list[str]:
        """Thresholds crossed for the first time in their period (each is reported once)."""
        alerts = []
        for p in status.periods:
            for threshold in self._defaults.alert_thresholds:
                if p.fraction < threshold:
                    continue
                key = self._key("alert", p.period, str(int(p.since)), f"{threshold:g}")
                if await self._bus.transport.set(key, b"1", ttl_ms=40 * 86400 * 1000, nx=True):
                    alerts.append(
                        f"{p.period} budget {threshold:.0%} reached: ${p.spent_usd:.2f} of ${p.limit_usd:.2f}"
                    )
        return alerts

    async def report(self, period: Period | None, by: str, now: float | None = None) -> CostReportOutput:
        since = period_start(period, time.time() if now is None else now) if period else None
        groups: dict[str, list[UsageEntry]] = defaultdict(list)
        for e in await self.entries(since):
            key = {"job": e.job_id, "domain": e.target, "provider": e.provider, "step": e.step}[by]
            groups[key].append(e)
        rows = [
            CostRow(
                key=key,
                usd=round(sum(e.usd for e in items), 6),
                seconds=round(sum(e.seconds for e in items), 3),
                entries=len(items),
            )
            for key, items in groups.items()
        ]
        rows.sort(key=lambda r: (-r.usd, -r.seconds, r.key))
        return CostReportOutput(
            period=period or "all", since=since, rows=rows, total_usd=round(sum(r.usd for r in rows), 6)
        )
