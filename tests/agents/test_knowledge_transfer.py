"""Knowledge Transfer: the index, recommendations by similarity, warm-versus-cold measurement."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.knowledge_transfer import KnowledgeTransferAgent
from agents.knowledge_transfer.index import steps_to_loss
from protocol.agents.knowledge_transfer import ListTransfersOutput, Recommendation, RegisterDomainOutput
from runtime import open_swarm
from tests.models.conftest import write_conversations

pytestmark = pytest.mark.anyio


async def test_recommends_the_most_similar_trained_domain_of_the_same_base(  # type: ignore[no-untyped-def]
    settings_factory, bus_url: str, tmp_path: Path
) -> None:
    async with open_swarm(settings_factory(bus_url), [KnowledgeTransferAgent]) as swarm:
        client, artifacts = swarm.client, swarm.artifacts
        adapter = await artifacts.put_bytes(b"an adapter", name="adapter.safetensors")
        data = await artifacts.put_file(write_conversations(tmp_path / "mh.jsonl", "mental_health", 0, 20))
        curve = [(1, 3.0), (5, 2.5), (10, 2.0)]
        registered = await client.call_model(
            "knowledge_transfer",
            "register",
            {
                "domain": "mental_health", "base_model": "default", "adapter": adapter.model_dump(by_alias=True),
                "dataset": data.model_dump(by_alias=True), "job_id": "cold-mh", "final_loss": 2.0,
                "steps": 10, "loss_curve": curve,
            },
            RegisterDomainOutput,
        )  # fmt: skip
        assert registered.indexed == 1

        near = await client.call_model(
            "knowledge_transfer", "recommend", {"domain": "stress_management", "base_model": "default"}, Recommendation
        )
        assert near.domain == "mental_health" and near.adapter == adapter
        assert near.similarity is not None and near.similarity >= near.threshold
        far = await client.call_model(
            "knowledge_transfer", "recommend", {"domain": "programming", "base_model": "default"}, Recommendation
        )
        assert far.domain is None and far.candidates[0].domain == "mental_health"
        assert far.candidates[0].similarity < near.similarity
        other_base = await client.call_model(
            "knowledge_transfer", "recommend", {"domain": "stress_management", "base_model": "x.gguf"}, Recommendation
        )
        assert other_base.domain is None and other_base.candidates == []
        itself = await client.call_model(
            "knowledge_transfer", "recommend", {"domain": "mental_health", "base_model": "default"}, Recommendation
        )
        assert itself.candidates == []


async def test_warm_versus_cold_is_measured_from_the_loss_curves(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path
) -> None:
    async with open_swarm(settings_factory(memory_url), [KnowledgeTransferAgent]) as swarm:
        client, artifacts = swarm.client, swarm.artifacts
        adapter = (await artifacts.put_bytes(b"a", name="a.safetensors")).model_dump(by_alias=True)
        data = await artifacts.put_file(write_conversations(tmp_path / "sm.jsonl", "stress_management", 0, 10))
        base = {"domain": "stress_management", "base_model": "default", "adapter": adapter}
        base["dataset"] = data.model_dump(by_alias=True)
        cold = [(1, 3.0), (10, 2.6), (20, 2.3), (30, 2.1), (40, 2.0), (50, 1.9)]
        warm = [(1, 2.4), (10, 2.1), (20, 1.95), (30, 1.9), (40, 1.85), (50, 1.8)]
        await client.call("knowledge_transfer", "register", {**base, "job_id": "c", "steps": 50, "loss_curve": cold})
        await client.call(
            "knowledge_transfer",
            "register",
            {**base, "job_id": "w", "steps": 50, "loss_curve": warm, "warm_started_from": "mental_health"},
        )
        out = await client.call_model("knowledge_transfer", "transfers", {}, ListTransfersOutput)
    (comparison,) = out.comparisons
    assert comparison.target_loss == pytest.approx(2.0)  # mean of the cold run's last three points
    assert comparison.cold_steps == 50 and comparison.warm_steps_to_target == 30
    assert (comparison.cold_job, comparison.warm_job) == ("c", "w")


def test_steps_to_loss_smooths_noise() -> None:
    noisy = [(1, 3.0), (2, 1.0), (3, 3.0), (4, 2.0), (5, 1.8), (6, 1.7)]
    assert steps_to_loss(noisy, 1.9) == 6  # one lucky batch at step 2 does not count
    assert steps_to_loss(noisy, 0.5) is None
