"""Jobs and batches in the swarm's record store, and leases so one Conductor drives each job.

A job record is written after every change, so a restarted Conductor continues from the last
recorded step. A lease has a time-to-live and is taken and renewed only by compare-and-set:
while it lives, no other Conductor replica drives that job.
"""

from __future__ import annotations

from pydantic import RootModel

from protocol.agents.conductor import BatchRecord, JobRecord
from runtime import LeaseKind, RecordKind, RecordStore

__all__ = ["JobStore"]


class CancelRequest(RootModel[bool]):
    """Present once a cancel was asked for (older swarms wrote ``1``, which reads as true)."""


JOBS = RecordKind("job", JobRecord)
BATCHES = RecordKind("batch", BatchRecord)
CANCELS = RecordKind("job-cancel", CancelRequest)
LEASES = LeaseKind("job-lease")
ADMISSION = LeaseKind("batch-admission")
ADMISSION_MS = 10_000
"""Held by the Conductor admitting queued batch jobs; a dead holder's lapses after this long."""


class JobStore:
    """Job records, cancel requests and leases, each by job id."""

    def __init__(self, records: RecordStore, *, lease_ms: int) -> None:
        self._jobs = records.collection(JOBS)
        self._batches = records.collection(BATCHES)
        self._cancels = records.collection(CANCELS)
        self._leases = records.leases(LEASES)
        self._admission = records.leases(ADMISSION)
        self.lease_ms = lease_ms

    async def request_cancel(self, job_id: str) -> None:
        """A separate record, so the driver's next job write cannot overwrite the request."""
        await self._cancels.put(job_id, CancelRequest(True))

    async def cancel_requested(self, job_id: str) -> bool:
        return await self._cancels.get(job_id) is not None

    async def save(self, job: JobRecord) -> None:
        await self._jobs.put(job.job_id, job)

    async def create(self, job: JobRecord) -> bool:
        """Store a new job; False when the id is taken."""
        return await self._jobs.create(job.job_id, job)

    async def load(self, job_id: str) -> JobRecord | None:
        return await self._jobs.get(job_id)

    async def create_batch(self, batch: BatchRecord) -> bool:
        return await self._batches.create(batch.batch_id, batch)

    async def load_batch(self, batch_id: str) -> BatchRecord | None:
        return await self._batches.get(batch_id)

    async def all(self) -> list[JobRecord]:
        jobs = list((await self._jobs.scan()).values())
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        return jobs

    async def acquire(self, job_id: str, owner: str) -> bool:
        """Take the job's lease if nobody holds it, we already do, or our dead predecessor did.

        Owners are ``{instance_id}/{run}``. A live process owns its instance id, so a lease held by
        the same instance id under another run was left by a process that died: a supervisor
        restarting the Conductor under its stable id takes its jobs back at once instead of
        waiting out the lease.
        """
        if await self.renew(job_id, owner):
            return True
        held = await self._leases.holder(job_id)
        if held is None or held.partition("/")[0] != owner.partition("/")[0]:
            return False
        return await self._leases.take_over(job_id, held, owner, ttl_ms=self.lease_ms)

    async def renew(self, job_id: str, owner: str) -> bool:
        """Extend (or retake, if it lapsed unclaimed) our lease; False when someone else holds it."""
        return await self._leases.acquire(job_id, owner, ttl_ms=self.lease_ms)

    async def release(self, job_id: str, owner: str) -> None:
        await self._leases.release(job_id, owner)

    async def leased(self, job_id: str) -> bool:
        """Whether some Conductor holds the job's lease."""
        return await self._leases.holder(job_id) is not None

    async def take_admission(self, owner: str) -> bool:
        return await self._admission.acquire("batches", owner, ttl_ms=ADMISSION_MS)

    async def release_admission(self, owner: str) -> None:
        await self._admission.release("batches", owner)
