"""Following one job on the events stream: jobs are the runtime's business, not the bus's."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bus import Bus, EventRecord
from protocol import JobEvent, JobEventNotification

__all__ = ["job_events"]


async def job_events(bus: Bus, job_id: str, *, since: str) -> AsyncIterator[tuple[EventRecord, JobEvent]]:
    """One job's events after ``since``, up to and including its terminal one."""
    async for record in bus.events(since=since):
        message = record.envelope.message
        if isinstance(message, JobEventNotification) and message.params.job_id == job_id:
            yield record, message.params
            if message.params.terminal:
                return
