"""A swarm upgraded in place keeps its state: values under the keys older versions wrote load through the stores."""

from __future__ import annotations

import hashlib
import time

import pytest

from agents.conductor.job_store import JobStore
from agents.cost_monitor.ledger import Ledger
from agents.knowledge_transfer.index import DomainIndex
from bus import Bus
from protocol import ArtifactRef
from protocol.agents.conductor import STEPS, JobPlan, JobRecord, JobSpec, StepRecord
from protocol.agents.cost_monitor import UsageEntry
from protocol.agents.gpu_optimization import TrainingOverrides
from protocol.agents.knowledge_transfer import IndexedDomain
from runtime import RecordStore, TransportRecords, load_catalog

pytestmark = pytest.mark.anyio


def records(bus: Bus) -> RecordStore:
    return RecordStore(TransportRecords(bus.transport, bus.keys.namespace))


async def test_jobs_cancel_flags_and_leases_under_the_old_keys(bus: Bus) -> None:
    plan = JobPlan(
        samples=40, training=TrainingOverrides(max_steps=6), device="cpu", provider="local", gpu=None,
        estimated_hours=0.0, estimated_usd=0.0, reasons=[],
    )  # fmt: skip
    job = JobRecord(
        job_id="0123456789abcdef", spec=JobSpec(target="sleep"), domains=["sleep"], plan=plan, state="train",
        steps=[StepRecord(name=s) for s in STEPS], created_at=time.time(), updated_at=time.time(),
    )  # fmt: skip
    keys, transport = bus.keys, bus.transport
    await transport.set(keys.stream(f"job:{job.job_id}"), job.model_dump_json().encode())
    await transport.set(keys.stream(f"job-cancel:{job.job_id}"), b"1")
    await transport.set(keys.stream(f"job-lease:{job.job_id}"), b"cond-a/run1", ttl_ms=60_000)

    store = JobStore(records(bus), lease_ms=60_000)
    assert await store.load(job.job_id) == job and await store.all() == [job]
    assert await store.cancel_requested(job.job_id)
    assert not await store.acquire(job.job_id, "cond-b/run1")
    assert await store.acquire(job.job_id, "cond-a/run2")  # the same instance takes its lease back
    assert await transport.get(keys.stream(f"job-lease:{job.job_id}")) == b"cond-a/run2"

    job.state = "done"
    await store.save(job)  # and new writes land where older versions read
    raw = await transport.get(keys.stream(f"job:{job.job_id}"))
    assert raw is not None and JobRecord.model_validate_json(raw).state == "done"


async def test_ledger_entries_budgets_and_alerts_under_the_old_keys(bus: Bus) -> None:
    keys, transport = bus.keys, bus.transport
    entry = UsageEntry(
        job_id="j1", step="train", attempt=1, agent="gpu_optimization", target="sleep", device="cpu",
        provider="local", gpu=None, seconds=60.0, usd_per_hour=30.0, usd=0.5, at=time.time(),
    )  # fmt: skip
    await transport.set(keys.stream("cost:entry:j1:train:1"), entry.model_dump_json().encode())
    await transport.set(keys.stream("cost:budget:day"), repr(0.55).encode())

    ledger = Ledger(records(bus), load_catalog().budgets)
    assert await ledger.entries() == [entry]
    # One entry per (job, step, attempt): a second report returns the stored one.
    assert await ledger.add(entry.model_copy(update={"usd": 9.0})) == (entry, False)
    assert await ledger.limit("day") == 0.55
    status = await ledger.status()  # $0.50 of $0.55: past 50%, 80% and 90%
    day = next(p for p in status.periods if p.period == "day")
    await transport.set(keys.stream(f"cost:alert:day:{int(day.since)}:0.5"), b"1")  # sent before the upgrade
    alerts = [a for a in await ledger.new_alerts(status) if a.startswith("day")]
    assert [a.split(" reached")[0] for a in alerts] == ["day budget 80%", "day budget 90%"]
    assert await ledger.new_alerts(status) == []  # each once

    await ledger.set_limit("week", 7.0)
    assert await transport.get(keys.stream("cost:budget:week")) == b"7.0"


async def test_the_knowledge_transfer_index_under_the_old_keys(bus: Bus) -> None:
    adapter = ArtifactRef(uri="file:///a", sha256="0" * 64, size=1)
    entry = IndexedDomain(
        domain="mental_health", base_model="default", adapter=adapter, job_id="cold-mh", final_loss=2.0,
        eval_loss=None, steps=10, loss_curve=[(1, 3.0), (10, 2.0)], warm_started_from=None, embedding=[1.0, 0.0],
    )  # fmt: skip
    base = hashlib.sha256(b"default").hexdigest()[:16]
    raw = entry.model_dump_json().encode()
    await bus.transport.set(bus.keys.stream(f"kt:domain:{base}:mental_health"), raw)
    await bus.transport.set(bus.keys.stream(f"kt:run:{base}:mental_health:cold-mh"), raw)

    index = DomainIndex(records(bus))
    assert await index.domains("default") == [entry] and await index.domains("other.gguf") == []
    warm = entry.model_copy(update={"domain": "stress_management", "job_id": "warm", "warm_started_from": "x"})
    await index.put(warm)
    assert await bus.transport.get(bus.keys.stream(f"kt:run:{base}:stress_management:warm")) is not None
    assert len(await index.domains("default")) == 2
