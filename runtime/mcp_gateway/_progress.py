"""Turning the swarm's events into MCP progress notifications.

Agents publish ``notifications/progress`` (keyed by the caller's progress token), and the Conductor
job events, on the bus's events stream; MCP wants one rising number per request. Progress that does
not rise is dropped, because the MCP specification requires every notification to increase it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bus import Bus
from protocol import JobEvent, ProgressParams
from protocol.agents.conductor import STEPS
from runtime._job_events import job_events
from runtime._progress import OnProgress

__all__ = ["JobProgress", "ReportProgress", "follow_job", "rising"]

_STEP_INDEX: dict[str, int] = {step: i for i, step in enumerate(STEPS)}
_NUDGE = 1e-3

ReportProgress = Callable[[float, float | None, str | None], Awaitable[None]]
"""``(progress, total, message)``: sends one MCP progress notification."""


def rising(report: ReportProgress) -> OnProgress:
    """Forward one call's progress notifications to MCP, dropping those that do not rise."""
    last: float | None = None

    async def forward(params: ProgressParams) -> None:
        nonlocal last
        if last is None or params.progress > last:
            last = params.progress
            await report(params.progress, params.total, params.message)

    return forward


class JobProgress:
    """One rising number over a job's whole pipeline: a unit per step, fractions within a step."""

    total = float(len(STEPS))

    def __init__(self) -> None:
        self.value = -1.0

    def update(self, event: JobEvent) -> tuple[float, str] | None:
        """The progress and message to report for ``event``, or ``None`` when it adds nothing."""
        value: float | None = None
        message = event.message
        if event.kind == "submitted":
            # The client learns the job id here, before the job ends.
            value, message = 0.0, f"job {event.job_id} submitted" + (f": {message}" if message else "")
        elif event.kind == "state_changed" and event.state == "done":
            value = self.total
        elif event.kind == "state_changed" and event.state in _STEP_INDEX:
            value = float(_STEP_INDEX[event.state])
        elif event.kind == "step_finished" and event.step in _STEP_INDEX:
            # Short of the next unit, so the next step's start (and "done") still rise.
            value = _STEP_INDEX[event.step] + 0.99
        elif event.kind == "waiting":
            # MCP progress must rise: a nudge carries the news that the job waits for an agent.
            value = self.value + _NUDGE
        elif event.kind == "progress" and event.step in _STEP_INDEX and event.progress is not None and event.total:
            value = _STEP_INDEX[event.step] + min(event.progress / event.total, 0.98)
            message = message or f"{event.step} {event.progress:g}/{event.total:g}"
        if value is None or value <= self.value:
            return None
        self.value = value
        return value, message or f"{event.state or event.step or event.kind}"


async def follow_job(bus: Bus, job_id: str, since: str, report: ReportProgress) -> JobEvent:
    """Report a job's progress from its events after ``since`` until one is terminal; returns that one."""
    progress = JobProgress()
    async for _record, event in job_events(bus, job_id, since=since):
        update = progress.update(event)
        if update is not None:
            await report(update[0], progress.total, update[1])
        if event.terminal:
            return event
    raise AssertionError("job_events ends only after a terminal event")  # pragma: no cover
