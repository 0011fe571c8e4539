"""Batches: one domain job per domain, trained the same way, admitted a few at a time.

A batch's jobs are ordinary jobs carrying its id. They wait as ``queued`` (state ``planned``, not
driven) until a slot of their batch is free: ``batch_jobs_per_gpu`` per live GPU Optimization
instance, so replicas share a batch's training and one job's data generation overlaps another's
training, without a 62-domain batch flooding every agent's inbox at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import get_args

from protocol.agents.conductor import (
    BatchGroup,
    BatchJob,
    BatchRecord,
    BatchStatus,
    JobRecord,
    SubmitBatchInput,
)
from runtime import Catalog

__all__ = ["batch_domains", "batch_status", "free_slots", "group_of"]

GROUPS: tuple[BatchGroup, ...] = get_args(BatchGroup)


def batch_domains(params: SubmitBatchInput, catalog: Catalog) -> list[str]:
    """The domains a batch asks for, in catalogue order for a category or all; unknown names are refused."""
    if params.all_domains:
        return list(catalog.domains)
    if params.category is not None:
        return list(catalog.category(params.category).domains)
    return [catalog.domain(name).name for name in params.domains]


def group_of(job: JobRecord, driven: bool = False) -> BatchGroup:
    """Where the job is (a planned job being driven is running)."""
    if job.state == "done" or job.state == "failed" or job.state == "cancelled":
        return job.state
    if job.state == "paused_budget":
        return "paused"
    if job.state == "planned" and not driven:
        return "queued"
    return "running"


def free_slots(jobs: Iterable[JobRecord], driving: set[str], limit: int) -> dict[str, int]:
    """Per batch: how many more of its queued jobs may start now."""
    running: Counter[str] = Counter()
    batches: set[str] = set()
    for job in jobs:
        if job.batch_id is None:
            continue
        batches.add(job.batch_id)
        if group_of(job, job.job_id in driving) == "running":
            running[job.batch_id] += 1
    return {batch: max(limit - running[batch], 0) for batch in batches}


def batch_status(batch: BatchRecord, jobs: dict[str, JobRecord], skipped: list[str] | None = None) -> BatchStatus:
    rows: list[BatchJob] = []
    remaining_hours = 0.0
    for job_id, domain in zip(batch.job_ids, batch.domains, strict=True):
        job = jobs.get(job_id)
        if job is None:  # its submission failed before this job was made
            error = "never created: the submission failed"
            rows.append(
                BatchJob(
                    job_id=job_id, domain=domain, state="cancelled", group="cancelled",
                    estimated_usd=0.0, spent_usd=0.0, error=error,
                )
            )  # fmt: skip
            continue
        group = group_of(job)
        rows.append(
            BatchJob(
                job_id=job_id,
                domain=domain,
                state=job.state,
                group=group,
                estimated_usd=job.plan.estimated_usd,
                spent_usd=round(sum(step.usd for step in job.steps), 6),
                error=job.error,
            )
        )
        if group in ("queued", "running", "paused") and job.step("train").status != "done":
            remaining_hours += job.plan.estimated_hours
    counts: Counter[str] = Counter(row.group for row in rows)
    return BatchStatus(
        batch_id=batch.batch_id,
        created_at=batch.created_at,
        counts={group: counts[group] for group in GROUPS},
        estimated_usd=batch.estimated_usd,
        spent_usd=round(sum(row.spent_usd for row in rows), 6),
        remaining_hours=round(remaining_hours, 4),
        jobs=rows,
        skipped=skipped or [],
    )
