"""The index of trained domains, kept in the swarm's record store, and the warm-versus-cold measurement."""

from __future__ import annotations

import hashlib

from protocol.agents.knowledge_transfer import IndexedDomain, TransferComparison
from runtime import RecordKind, RecordStore

__all__ = ["DomainIndex", "steps_to_loss"]

LATEST = RecordKind("kt:domain", IndexedDomain)
"""The latest entry of each domain, by ``{base}:{domain}``."""
RUNS = RecordKind("kt:run", IndexedDomain)
"""Every registered run, by ``{base}:{domain}:{job}``."""


def _base_key(base_model: str) -> str:
    return hashlib.sha256(base_model.encode()).hexdigest()[:16]


def steps_to_loss(curve: list[tuple[int, float]], target: float, window: int = 3) -> int | None:
    """First step where the running mean of the last ``window`` recorded losses is at or below ``target``."""
    for i in range(len(curve)):
        recent = [loss for _, loss in curve[max(0, i - window + 1) : i + 1]]
        if sum(recent) / len(recent) <= target:
            return curve[i][0]
    return None


class DomainIndex:
    """Latest entry per (base model, domain) plus every run; ``base`` is a short hash of the base model."""

    def __init__(self, records: RecordStore) -> None:
        self._latest = records.collection(LATEST)
        self._runs = records.collection(RUNS)

    async def put(self, entry: IndexedDomain) -> None:
        base = _base_key(entry.base_model)
        await self._latest.put(f"{base}:{entry.domain}", entry)
        await self._runs.put(f"{base}:{entry.domain}:{entry.job_id or 'manual'}", entry)

    async def domains(self, base_model: str) -> list[IndexedDomain]:
        return list((await self._latest.scan(f"{_base_key(base_model)}:")).values())

    async def comparisons(self) -> list[TransferComparison]:
        runs = list((await self._runs.scan()).values())
        out = []
        for warm in (r for r in runs if r.warm_started_from):
            colds = [
                r
                for r in runs
                if r.domain == warm.domain and r.base_model == warm.base_model and not r.warm_started_from
            ]
            if not colds or (colds[-1].final_loss is None and not colds[-1].loss_curve):
                continue
            cold = colds[-1]
            # The cold run's loss at its end, smoothed as steps_to_loss smooths the warm curve.
            tail = [loss for _, loss in cold.loss_curve[-3:]]
            if not tail and cold.final_loss is not None:
                tail = [cold.final_loss]
            target = sum(tail) / len(tail)
            out.append(
                TransferComparison(
                    domain=warm.domain,
                    warm_started_from=warm.warm_started_from or "",
                    target_loss=round(target, 6),
                    cold_steps=cold.steps,
                    warm_steps_to_target=steps_to_loss(warm.loss_curve, target),
                    cold_job=cold.job_id,
                    warm_job=warm.job_id,
                )
            )
        return out
