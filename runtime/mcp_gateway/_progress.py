"""Turning the swarm's events into MCP progress notifications.

Agents publish ``notifications/progress`` (keyed by the caller's progress token) and job events
on the bus's events stream; MCP wants one rising number per request. Progress that does not rise
is dropped, because the MCP specification requires every notification to increase it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from bus import Bus
from protocol import JobEvent, ProgressNotification
from protocol.agents.conductor import STEPS
from runtime._job_events import job_events

__all__ = ["JobProgress", "ReportProgress", "ToolProgressRelay", "follow_job"]

_STEP_INDEX: dict[str, int] = {step: i for i, step in enumerate(STEPS)}

ReportProgress = Callable[[float, float | None, str | None], Awaitable[None]]
"""``(progress, total, message)``: sends one MCP progress notification."""


def _position(entry_id: str) -> tuple[int, int]:
    """Order of a stream entry id (``milliseconds-sequence`` on both backends)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class ToolProgressRelay:
    """Forwards the progress an agent publishes for one call's ``token``, from ``since`` on."""

    def __init__(self, bus: Bus, since: str, token: str, report: ReportProgress) -> None:
        self._bus = bus
        self._since = since
        self._token = token
        self._report = report
        self._position = _position(since)
        self._moved = anyio.Event()
        self._stopped = False

    async def run(self) -> None:
        """Relay until cancelled."""
        last: float | None = None
        try:
            async for record in self._bus.events(since=self._since):
                message = record.envelope.message
                if isinstance(message, ProgressNotification) and message.params.progress_token == self._token:
                    params = message.params
                    if last is None or params.progress > last:
                        last = params.progress
                        await self._report(params.progress, params.total, params.message)
                self._position = _position(record.id)
                self._moved.set()
                self._moved = anyio.Event()
        finally:
            self._stopped = True
            self._moved.set()

    async def drain(self, until: str) -> None:
        """Return once every event up to entry ``until`` was relayed (or the relay stopped)."""
        target = _position(until)
        while not self._stopped and self._position < target:
            await self._moved.wait()


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
