"""The index of trained domains, kept on the bus's transport, and the warm-versus-cold measurement."""

from __future__ import annotations

import hashlib

from bus import Bus
from protocol.agents.knowledge_transfer import IndexedDomain, TransferComparison

__all__ = ["DomainIndex", "steps_to_loss"]


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
    """Latest entry per (base model, domain) plus every run, under ``{namespace}:kt:*``."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def _key(self, *parts: str) -> str:
        return self._bus.keys.stream(":".join(("kt", *parts)))

    async def put(self, entry: IndexedDomain) -> None:
        base = _base_key(entry.base_model)
        raw = entry.model_dump_json().encode()
        await self._bus.transport.set(self._key("domain", base, entry.domain), raw)
        await self._bus.transport.set(self._key("run", base, entry.domain, entry.job_id or "manual"), raw)

    async def _load(self, pattern: str) -> list[IndexedDomain]:
        keys = await self._bus.transport.scan(pattern)
        return [IndexedDomain.model_validate_json(r) for r in await self._bus.transport.get_many(keys) if r is not None]

    async def domains(self, base_model: str) -> list[IndexedDomain]:
        return await self._load(self._key("domain", _base_key(base_model), "*"))

    async def comparisons(self) -> list[TransferComparison]:
        runs = await self._load(self._key("run", "*"))
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
