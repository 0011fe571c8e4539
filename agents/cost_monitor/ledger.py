"""The usage ledger and budgets, kept in the swarm's record store.

One record per (job, step, attempt) makes reporting idempotent: a step reported twice after a
crash is one entry. Budget overrides and alerts already sent are records beside the entries.
"""

from __future__ import annotations

import calendar
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from pydantic import RootModel

from protocol.agents.cost_monitor import (
    BudgetPeriodStatus,
    BudgetStatus,
    CostReportOutput,
    CostRow,
    Period,
    UsageEntry,
)
from runtime import Budgets, RecordKind, RecordStore

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


class BudgetLimit(RootModel[float]):
    """A period's budget in USD, set over the catalogue's default."""


class AlertSent(RootModel[bool]):
    """Present once a threshold's alert went out in a period (older swarms wrote ``1``)."""


ENTRIES = RecordKind("cost:entry", UsageEntry)
LIMITS = RecordKind("cost:budget", BudgetLimit)
ALERTS = RecordKind("cost:alert", AlertSent)
ALERT_TTL_MS = 40 * 86400 * 1000
"""Longer than any period, so an alert is sent once per period and threshold."""


class Ledger:
    """Entries by ``{job}:{step}:{attempt}``, budgets by period, sent alerts by period, start and threshold."""

    def __init__(self, records: RecordStore, defaults: Budgets) -> None:
        self._entries = records.collection(ENTRIES)
        self._limits = records.collection(LIMITS)
        self._alerts = records.collection(ALERTS)
        self._defaults = defaults

    async def add(self, entry: UsageEntry) -> tuple[UsageEntry, bool]:
        """Store ``entry`` unless its (job, step, attempt) is already there; returns the stored one."""
        entry_id = f"{entry.job_id}:{entry.step}:{entry.attempt}"
        if await self._entries.create(entry_id, entry):
            return entry, True
        stored = await self._entries.get(entry_id)
        return (stored, False) if stored is not None else (entry, False)

    async def entries(self, since: float | None = None) -> list[UsageEntry]:
        rows = (await self._entries.scan()).values()
        return [e for e in rows if since is None or e.at >= since]

    async def limit(self, period: Period) -> float:
        stored = await self._limits.get(period)
        return stored.root if stored is not None else float(getattr(self._defaults, period))

    async def set_limit(self, period: Period, usd: float) -> None:
        await self._limits.put(period, BudgetLimit(float(usd)))

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
                alert_id = f"{p.period}:{int(p.since)}:{threshold:g}"
                if await self._alerts.create(alert_id, AlertSent(True), ttl_ms=ALERT_TTL_MS):
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
                tokens=sum(e.tokens.prompt_tokens + e.tokens.completion_tokens for e in items if e.tokens),
            )
            for key, items in groups.items()
        ]
        rows.sort(key=lambda r: (-r.usd, -r.seconds, r.key))
        return CostReportOutput(
            period=period or "all", since=since, rows=rows, total_usd=round(sum(r.usd for r in rows), 6)
        )
