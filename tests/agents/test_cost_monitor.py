"""The Cost Monitor's ledger and budgets, over the bus on both backends."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import anyio
import pytest

from agents.cost_monitor import CostMonitorAgent
from agents.cost_monitor.ledger import period_start
from protocol import InvalidParams, JobEventNotification
from protocol.agents.cost_monitor import (
    BudgetStatus,
    CostReportOutput,
    EstimateOutput,
    RecordUsageOutput,
)
from runtime import open_swarm

pytestmark = pytest.mark.anyio


def usage(job: str, step: str, seconds: float, **extra: object) -> dict[str, object]:
    return {"job_id": job, "step": step, "agent": "gpu_optimization", "seconds": seconds, **extra}


async def test_usage_is_priced_once_per_step_attempt_and_reported_by_group(settings_factory, bus_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(bus_url), [CostMonitorAgent]) as swarm:
        client = swarm.client
        a100 = usage("job-a", "train", 3600, provider="runpod", gpu="A100", target="sleep")
        first = await client.call_model("cost_monitor", "record_usage", a100, RecordUsageOutput)
        assert first.recorded and first.entry.usd == pytest.approx(0.79) and first.entry.usd_per_hour == 0.79
        again = await client.call_model("cost_monitor", "record_usage", {**a100, "seconds": 99}, RecordUsageOutput)
        assert not again.recorded and again.entry == first.entry  # a re-reported step is one entry
        retry = {**a100, "attempt": 2, "seconds": 1800}
        assert (await client.call_model("cost_monitor", "record_usage", retry, RecordUsageOutput)).recorded
        local = usage("job-b", "data", 120, target="nutrition")
        assert (await client.call_model("cost_monitor", "record_usage", local, RecordUsageOutput)).entry.usd == 0.0

        by_job = await client.call_model("cost_monitor", "cost_report", {"by": "job"}, CostReportOutput)
        assert [(r.key, r.entries) for r in by_job.rows] == [("job-a", 2), ("job-b", 1)]
        assert by_job.rows[0].usd == pytest.approx(0.79 * 1.5) and by_job.total_usd == pytest.approx(1.185)
        by_domain = await client.call_model(
            "cost_monitor", "cost_report", {"by": "domain", "period": "all"}, CostReportOutput
        )
        assert {r.key for r in by_domain.rows} == {"sleep", "nutrition"} and by_domain.since is None

        with pytest.raises(InvalidParams, match="no price for GPU 'H200'"):
            await client.call("cost_monitor", "record_usage", usage("job-c", "train", 1, provider="runpod", gpu="H200"))
        with pytest.raises(InvalidParams, match="unknown provider"):
            await client.call("cost_monitor", "record_usage", usage("job-c", "train", 1, provider="aws"))


async def test_alerts_fire_once_per_threshold_and_the_stop_threshold_refuses_work(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str
) -> None:
    async with open_swarm(settings_factory(memory_url), [CostMonitorAgent]) as swarm:
        client = swarm.client
        since = await swarm.bus.transport.last_id(swarm.bus.keys.events)
        await client.call("cost_monitor", "set_budget", {"period": "day", "usd": 1.0})
        plan = {"hours": 1, "provider": "runpod", "gpu": "A100"}
        fits = await client.call_model("cost_monitor", "estimate", plan, EstimateOutput)
        assert fits.fits and fits.usd == pytest.approx(0.79)

        # 0.6 USD: the day budget passes 50%; the week's 25 USD is untouched.
        step = usage("job-a", "train", 3600 * 0.6 / 0.79, provider="runpod", gpu="A100")
        first = await client.call_model("cost_monitor", "record_usage", step, RecordUsageOutput)
        assert first.alerts == ["day budget 50% reached: $0.60 of $1.00"]
        second = await client.call_model("cost_monitor", "record_usage", {**step, "step": "convert"}, RecordUsageOutput)
        assert [a.split(" reached")[0] for a in second.alerts] == ["day budget 80%", "day budget 90%", "day budget 95%"]

        status = await client.call_model("cost_monitor", "budget_status", {}, BudgetStatus)
        day = next(p for p in status.periods if p.period == "day")
        assert status.stopped and day.spent_usd == pytest.approx(1.2) and day.fraction == pytest.approx(1.2)
        refused = await client.call_model("cost_monitor", "estimate", {"hours": 0}, EstimateOutput)
        assert not refused.fits and "day budget would be exceeded" in (refused.reason or "")

        alerts = []
        with anyio.move_on_after(0.5):
            async for record in swarm.bus.events(since=since):
                message = record.envelope.message
                if isinstance(message, JobEventNotification) and message.params.kind == "alert":
                    alerts.append(message.params.message)
        assert len(alerts) == 4

        raised = await client.call_model("cost_monitor", "set_budget", {"period": "day", "usd": 100.0}, BudgetStatus)
        assert not raised.stopped


def test_periods_are_utc_calendar_day_iso_week_and_month() -> None:
    at = calendar.timegm(datetime(2026, 11, 29, 15, 30, tzinfo=UTC).timetuple())  # a Sunday
    assert period_start("day", at) == calendar.timegm(datetime(2026, 11, 29, tzinfo=UTC).timetuple())
    assert period_start("week", at) == calendar.timegm(datetime(2026, 11, 23, tzinfo=UTC).timetuple())
    assert period_start("month", at) == calendar.timegm(datetime(2026, 11, 1, tzinfo=UTC).timetuple())
