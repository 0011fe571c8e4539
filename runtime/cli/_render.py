"""Rich rendering of agents, tools, events and dead letters."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from bus import DeadLetter, EventRecord
from protocol import (
    AgentEventNotification,
    AgentInstance,
    JobEventNotification,
    ProgressNotification,
    ToolSpec,
)
from protocol.agents.conductor import BatchStatus, JobReport
from protocol.agents.gpu_optimization import RecommendProviderOutput, TrainingPlan
from protocol.agents.quality_assurance import ReportComparison

__all__ = ["agents_table", "dead_letters_table", "event_line", "report_table", "sparkline", "tools_table"]


def _ago(ts: float) -> str:
    return f"{max(0.0, time.time() - ts):.0f}s ago"


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def agents_table(instances: list[AgentInstance]) -> Table:
    table = Table(title=f"{len(instances)} live agent instance(s)")
    for col in ("agent", "instance", "host", "pid", "in flight", "tools", "heartbeat"):
        table.add_column(col)
    for i in instances:
        table.add_row(
            i.name,
            i.instance_id,
            i.host,
            str(i.pid),
            f"{i.in_flight}/{i.concurrency}",
            ", ".join(i.tools) or "-",
            _ago(i.heartbeat_at),
        )
    return table


def tools_table(agent: str, tools: list[ToolSpec]) -> Table:
    table = Table(title=f"{agent}: {len(tools)} tool(s)")
    table.add_column("tool")
    table.add_column("kind")
    table.add_column("description")
    for t in tools:
        a = t.annotations
        kind = "read-only" if a and a.read_only_hint else "destructive" if a and a.destructive_hint else "writes"
        table.add_row(t.name, kind, t.description.splitlines()[0])
    return table


def dead_letters_table(letters: list[DeadLetter]) -> Table:
    table = Table(title=f"{len(letters)} dead letter(s)")
    for col in ("id", "from", "deliveries", "failed", "error", "message"):
        table.add_column(col)
    for d in letters:
        body = d.original.get("body", "")
        try:
            message = json.loads(body).get("message", {})
            what = message.get("method") or ("response" if "id" in message else "?")
            if what == "tools/call":
                what += f" {message.get('params', {}).get('name', '?')}"
        except (ValueError, AttributeError):
            what = f"unreadable ({len(body)} bytes)"
        table.add_row(
            d.id,
            d.stream.rsplit(":", 1)[-1],
            str(d.deliveries),
            _clock(d.failed_at),
            f"[{d.error.code}] {d.error.message}",
            what,
        )
    return table


def event_line(record: EventRecord) -> str:
    message = record.envelope.message
    params: Any = getattr(message, "params", None)
    if isinstance(message, JobEventNotification):
        e = params
        bits = [f"job {e.job_id}", e.kind]
        if e.state:
            bits.append(f"state={e.state}")
        if e.step:
            bits.append(f"step={e.step}")
        if e.progress is not None:
            bits.append(f"{e.progress:g}/{e.total:g}" if e.total else f"{e.progress:g}")
        if e.message:
            bits.append(e.message)
        return f"{_clock(e.at)}  " + "  ".join(bits)
    if isinstance(message, AgentEventNotification):
        return f"{_clock(params.at)}  {params.kind}  {params.agent} ({params.instance_id})"
    if isinstance(message, ProgressNotification):
        total = f"/{params.total:g}" if params.total else ""
        return (
            f"{_clock(record.envelope.meta.sent_at)}  progress {params.progress_token}: "
            f"{params.progress:g}{total} {params.message or ''}".rstrip()
        )
    return f"{_clock(record.envelope.meta.sent_at)}  {getattr(message, 'method', type(message).__name__)}"


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """``values`` as one line of block characters (averaged into ``width`` columns), low to high."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    n = min(width, len(values))
    columns = [values[i * len(values) // n : (i + 1) * len(values) // n] for i in range(n)]
    means = [sum(c) / len(c) for c in columns]
    low, high = min(means), max(means)
    span = high - low or 1.0
    return "".join(_BARS[round((m - low) / span * (len(_BARS) - 1))] for m in means)


def report_table(report: JobReport, models_dir: Path) -> Table:
    """A job report for the terminal: outcome, files, quality and time per stage."""
    table = Table(title=f"job {report.job_id}: {report.state}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    if report.error:
        table.add_row("error", report.error)
    if report.data_pass_rate is not None:
        domains = f" over {len(report.domains)} domains" if len(report.domains) > 1 else ""
        table.add_row("data", f"{report.samples} conversations{domains}, QA pass rate {report.data_pass_rate:.1%}")
    if report.warm_started_from:
        table.add_row("warm start", f"from the {report.warm_started_from} adapter")
    for model in report.models:
        table.add_row("model", model.model_id)
        if model.deployed_version:
            table.add_row("deployed", f"{model.deployed_version} in {models_dir}")
        for f in model.files:
            table.add_row(f.kind, f"{f.path}  ({f.size / 1e6:.1f} MB, sha256 {f.sha256[:12]}…)")
        if model.qa_report_path:
            table.add_row("QA report", model.qa_report_path)
        if model.perplexity_base is not None and model.perplexity_adapted is not None:
            table.add_row("perplexity", f"base {model.perplexity_base:.2f} -> adapted {model.perplexity_adapted:.2f}")
        elif model.perplexity_base is not None and model.perplexity_merged is not None:
            table.add_row("perplexity", f"base {model.perplexity_base:.2f} -> merged {model.perplexity_merged:.2f}")
        if model.qa_score is not None:
            table.add_row("model QA", f"{model.qa_score:.1f}% ({'passed' if model.qa_passed else 'failed'})")
    if report.loss_curve:
        first, last = report.loss_curve[0], report.loss_curve[-1]
        curve = sparkline([loss for _, loss in report.loss_curve])
        table.add_row("training loss", f"{curve}  {first[1]:.3f} (step {first[0]}) -> {last[1]:.3f} (step {last[0]})")
    if report.report_path:
        chart = Path(report.report_path).with_name("loss_curve.svg")
        table.add_row("report", report.report_path + (f" (loss chart: {chart})" if report.loss_curve else ""))
    stages = [f"{s.step} {s.seconds:.0f}s" for s in report.stages if s.seconds is not None]
    table.add_row("stages", ", ".join(stages) or "-")
    total = f"{report.total_seconds:.0f}s" if report.total_seconds is not None else "-"
    pending = [s.step for s in report.stages if s.usd_pending]
    cost = f"${report.total_usd:.4f}" + (f" (not yet priced: {', '.join(pending)})" if pending else "")
    table.add_row("total", f"{total}, {cost}")
    return table


def comparison_table(comparison: ReportComparison, candidate: str) -> Table:
    """Two versions' QA measures side by side; worse rows in red."""
    baseline = comparison.baseline_version or "baseline"
    table = Table(title=f"{comparison.model_id}: {baseline} vs {candidate}", caption=comparison.reason)
    table.add_column("measure")
    table.add_column(baseline, justify="right")
    table.add_column(candidate, justify="right")
    table.add_column("")
    for m in comparison.metrics:
        style = "red" if m.worse else None
        table.add_row(m.metric, _number(m.baseline), _number(m.candidate), "worse" if m.worse else "", style=style)
    return table


def plan_table(tier: str, base: str, local: TrainingPlan, priced: RecommendProviderOutput, *, job_base: str) -> Table:
    """One tier's plan on this host and its price on each cloud GPU, LoRA or QLoRA by what fits."""
    here = f"{job_base} {local.method} on {local.device.name}, {local.precision}, micro-batch {local.micro_batch}"
    if local.memory is not None:
        here += f", {local.memory.total_gb:.1f} GB"
    table = Table(title=f"tier {tier}: {base}", caption=f"this host: {here}", caption_justify="left")
    for column in ("provider", "GPU", "method", "memory GB", "micro-batch", "hours", "USD", "fits session"):
        table.add_column(column, justify="right" if column not in {"provider", "GPU", "method"} else "left")
    for option in priced.options:
        best = priced.best is not None and option == priced.best
        table.add_row(
            option.provider + (" (best)" if best else ""),
            option.gpu,
            option.method,
            _number(option.memory_gb),
            str(option.micro_batch or ""),
            f"{option.estimated_hours:.2f}",
            f"{option.estimated_usd:.2f}",
            "yes" if option.fits_session else "no",
        )
    return table


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def batch_table(status: BatchStatus) -> Table:
    counts = ", ".join(f"{n} {group}" for group, n in status.counts.items() if n)
    title = (
        f"batch {status.batch_id}: {counts}; ${status.spent_usd:.2f} spent of ${status.estimated_usd:.2f} estimated"
        + (f"; {status.remaining_hours:.2f} h of training ahead" if status.remaining_hours else "")
    )
    table = Table(title=title, title_justify="left")
    for column in ("domain", "job", "state", "estimated $", "spent $", "error"):
        table.add_column(column, overflow="fold")
    for job in status.jobs:
        table.add_row(
            job.domain, job.job_id, job.state, f"{job.estimated_usd:.2f}", f"{job.spent_usd:.2f}", job.error or ""
        )
    return table
