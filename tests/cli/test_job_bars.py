"""The CLI's job bars: a step waiting for its agent says so, and says so no longer once it runs."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from protocol import JobEvent
from runtime.cli import JobBars


def _event(kind: str, **fields: object) -> JobEvent:
    return JobEvent(job_id="j1", kind=kind, step="data", **fields)  # type: ignore[arg-type]


def test_a_waiting_step_shows_what_it_waits_for_until_its_agent_is_back() -> None:
    with Progress(console=Console(file=io.StringIO())) as progress:
        bars = JobBars(progress)
        bars.apply(_event("waiting", message="waiting for data_generation"))
        assert bars.description("data") == "data: waiting for data_generation"
        bars.apply(_event("step_started", message="data started"))
        assert bars.description("data") == "data"
        bars.apply(_event("progress", progress=40, total=300, data={"part": "legal"}))
        assert bars.description("data") == "data legal"
        assert progress.tasks[0].completed == 40 and progress.tasks[0].total == 300
        bars.apply(_event("waiting", message="waiting for data_generation"))
        assert bars.description("data") == "data: waiting for data_generation"
        assert len(progress.tasks) == 1  # one bar per step, whatever happens to it


def test_events_without_a_step_draw_no_bar() -> None:
    with Progress(console=Console(file=io.StringIO())) as progress:
        bars = JobBars(progress)
        bars.apply(JobEvent(job_id="j1", kind="state_changed", state="queued", message="queued"))
        assert progress.tasks == []
