"""``meetara batch status|cancel|resume BATCH`` and following a batch ``meetara submit --domains`` made."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from protocol.agents.conductor import BatchStatus, SubmitBatchOutput
from runtime._client import SwarmClient
from runtime.cli._app import app, console, run_async, state
from runtime.cli._render import batch_table
from runtime.cli._session import client_session

batch = typer.Typer(help="Batches of domain jobs: status, cancel, resume.", no_args_is_help=True)
app.add_typer(batch, name="batch")

BatchId = Annotated[str, typer.Argument(help="Batch id from `meetara submit --domains`.")]
_POLL_S = 1.0


async def submit_batch_and_follow(client: SwarmClient, arguments: dict[str, Any], *, wait: bool) -> None:
    """Submit a batch; with ``wait`` show a bar until every job ended, then its table; exit 1 unless all are done."""
    submitted = await client.call_model("conductor", "submit_batch", arguments, SubmitBatchOutput)
    console.print(
        f"batch [bold]{submitted.batch_id}[/]: {len(submitted.jobs)} jobs, estimated ${submitted.estimated_usd:.2f}"
    )
    if not wait:
        return
    status = await follow_batch(client, submitted.batch_id)
    _show(status)
    if status.counts["done"] != len(status.jobs):
        raise typer.Exit(1)


async def follow_batch(client: SwarmClient, batch_id: str) -> BatchStatus:
    """Poll the batch with a progress bar (jobs ended of all) until every job ended, or none runs and
    some wait for budget (queued ones cannot start then either)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bars:
        task = bars.add_task("batch", total=None)
        while True:
            status = await _status(client, batch_id)
            counts = status.counts
            ended = sum(counts[g] for g in ("done", "failed", "cancelled"))
            waiting = ", ".join(f"{n} {g}" for g, n in counts.items() if n and g != "done")
            bars.update(task, total=len(status.jobs), completed=ended, description=f"batch: {waiting or 'done'}")
            if ended == len(status.jobs) or (counts["running"] == 0 and counts["paused"] > 0):
                return status
            await anyio.sleep(_POLL_S)


async def _status(client: SwarmClient, batch_id: str, tool: str = "batch_status") -> BatchStatus:
    return await client.call_model("conductor", tool, {"batch_id": batch_id}, BatchStatus)


def _show(status: BatchStatus) -> None:
    console.print(batch_table(status))
    for line in status.skipped:
        console.print(f"[dim]left alone: {line}[/]", highlight=False)
    if status.counts["paused"]:
        console.print(
            f"{status.counts['paused']} job(s) paused for budget: raise the budget "
            "(cost_monitor set_budget), then `meetara batch resume " + status.batch_id + "`",
            highlight=False,
        )


@batch.command()
@run_async
async def status(batch_id: BatchId) -> None:
    """Each job of the batch with its state, estimate and cost; the batch's totals and hours ahead."""
    async with client_session(state.settings) as client:
        _show(await _status(client, batch_id))


@batch.command()
@run_async
async def cancel(batch_id: BatchId) -> None:
    """Cancel every job of the batch that has not ended (queued ones never start)."""
    async with client_session(state.settings) as client:
        _show(await _status(client, batch_id, "cancel_batch"))


@batch.command()
@run_async
async def resume(
    batch_id: BatchId,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the batch until every job ended.")] = False,
) -> None:
    """Queue the batch's failed and budget-paused jobs again, each from its first unfinished step."""
    async with client_session(state.settings) as client:
        _show(await _status(client, batch_id, "resume_batch"))
        if wait:
            status = await follow_batch(client, batch_id)
            _show(status)
            if status.counts["done"] != len(status.jobs):
                raise typer.Exit(1)
