"""Jobs persisted on the bus's transport (Redis or in-memory), and leases so one Conductor drives each.

A job record is one JSON value written after every change, so a restarted Conductor continues
from the last recorded step. A lease is a key with a time-to-live, taken and renewed only by
compare-and-set: while it lives, no other Conductor replica drives that job.
"""

from __future__ import annotations

from bus import Bus
from protocol.agents.conductor import JobRecord

__all__ = ["JobStore"]


class JobStore:
    """Records under ``{namespace}:job:{id}``, leases under ``{namespace}:job-lease:{id}``."""

    def __init__(self, bus: Bus, *, lease_ms: int) -> None:
        self._bus = bus
        self.lease_ms = lease_ms

    def _record_key(self, job_id: str) -> str:
        return self._bus.keys.stream(f"job:{job_id}")

    def _lease_key(self, job_id: str) -> str:
        return self._bus.keys.stream(f"job-lease:{job_id}")

    def _cancel_key(self, job_id: str) -> str:
        return self._bus.keys.stream(f"job-cancel:{job_id}")

    async def request_cancel(self, job_id: str) -> None:
        """A separate key, so the driver's next record write cannot overwrite the request."""
        await self._bus.transport.set(self._cancel_key(job_id), b"1")

    async def cancel_requested(self, job_id: str) -> bool:
        return await self._bus.transport.get(self._cancel_key(job_id)) is not None

    async def save(self, job: JobRecord) -> None:
        await self._bus.transport.set(self._record_key(job.job_id), job.model_dump_json().encode())

    async def create(self, job: JobRecord) -> bool:
        """Store a new job; False when the id is taken."""
        return await self._bus.transport.set(self._record_key(job.job_id), job.model_dump_json().encode(), nx=True)

    async def load(self, job_id: str) -> JobRecord | None:
        raw = await self._bus.transport.get(self._record_key(job_id))
        return JobRecord.model_validate_json(raw) if raw is not None else None

    async def all(self) -> list[JobRecord]:
        keys = await self._bus.transport.scan(self._record_key("*"))
        raws = await self._bus.transport.get_many(keys)
        jobs = [JobRecord.model_validate_json(raw) for raw in raws if raw is not None]
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
        key = self._lease_key(job_id)
        held = await self._bus.transport.get(key)
        if held is None or held.decode().partition("/")[0] != owner.partition("/")[0]:
            return False
        return await self._bus.transport.compare_and_set(key, held, owner.encode(), ttl_ms=self.lease_ms)

    async def renew(self, job_id: str, owner: str) -> bool:
        """Extend (or retake, if it lapsed unclaimed) our lease; False when someone else holds it."""
        key, me, ttl = self._lease_key(job_id), owner.encode(), self.lease_ms
        transport = self._bus.transport
        return await transport.compare_and_set(key, me, me, ttl_ms=ttl) or await transport.compare_and_set(
            key, None, me, ttl_ms=ttl
        )

    async def release(self, job_id: str, owner: str) -> None:
        await self._bus.transport.compare_and_set(self._lease_key(job_id), owner.encode(), None)
