"""Data Generation and Quality Assurance as agents on an embedded swarm: the feedback loop end to end."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from agents.data_generation import DataGenerationAgent
from agents.quality_assurance import QualityAssuranceAgent
from protocol import InvalidParams, ProgressNotification
from protocol.agents.data_generation import CombineOutput, DatasetStats, GenerateOutput, ListGeneratorsOutput
from protocol.agents.quality_assurance import FilterDatasetOutput
from protocol.datasets import ConversationSample
from runtime import open_swarm

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(900)]

AGENTS = [DataGenerationAgent, QualityAssuranceAgent]


async def test_generate_writes_filtered_train_and_eval_splits(
    settings_factory, memory_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(memory_url, data_dir=tmp_path / "data")
    async with open_swarm(settings, AGENTS) as swarm:
        since = await swarm.bus.transport.last_id(swarm.bus.keys.events)
        out = await swarm.client.call_model(
            "data_generation",
            "generate",
            {"domain": "mental_health", "count": 240, "seed": 3},
            GenerateOutput,
            timeout=600,
        )
        progress = [r async for r in _events(swarm, since) if isinstance(r, ProgressNotification)]
    train = tmp_path / "data" / "training" / "healthcare" / "mental_health_training_data.jsonl"
    evaluation = train.with_name("mental_health_eval_data.jsonl")
    assert out.path == str(train) and out.eval_path == str(evaluation)
    train_lines = train.read_text().splitlines()
    eval_lines = evaluation.read_text().splitlines()
    assert len(train_lines) + len(eval_lines) == 240 and out.reached_target
    assert out.stats.samples == len(train_lines) and out.eval_samples == len(eval_lines) > 0
    assert out.dataset.sha256 == hashlib.sha256(train.read_bytes()).hexdigest()
    assert out.pass_rate >= 0.8 and out.rounds >= 1 and out.kept >= 240
    assert out.stats.crisis > 0 and 0 < out.stats.distinct_3gram_ratio <= 1
    # Evaluation situations never occur in training.
    train_keys = {json.loads(line)["split_key"] for line in train_lines}
    eval_keys = {json.loads(line)["split_key"] for line in eval_lines}
    assert train_keys.isdisjoint(eval_keys)
    samples = [ConversationSample.model_validate_json(line) for line in train_lines]
    systems = Counter(s.messages[0].content for s in samples if s.messages[0].role == "system")
    assert out.stats.system_prompts == dict(systems) and sum(systems.values()) == len(samples)
    assert out.stats.main_system_prompt == systems.most_common(1)[0][0]
    assert "mental wellbeing companion" in (out.stats.main_system_prompt or "")  # the domain's role
    assert progress, "generation publishes progress"


async def test_same_seed_same_dataset(settings_factory, memory_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    digests = []
    for run in range(2):
        settings = settings_factory(memory_url, data_dir=tmp_path / f"run{run}")
        async with open_swarm(settings, AGENTS) as swarm:
            out = await swarm.client.call_model(
                "data_generation",
                "generate",
                {"domain": "sleep", "count": 120, "seed": 11},
                GenerateOutput,
                timeout=600,
            )
        digests.append(out.dataset.sha256)
    assert digests[0] == digests[1]


async def test_filter_dataset_tool_reports_per_rule(settings_factory, memory_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = {
        "id": "ok",
        "domain": "sleep",
        "category": "healthcare",
        "emotion": "neutral",
        "empathy_markers": [],
        "crisis": False,
        "generator": "test",
        "messages": [
            {"role": "system", "content": "You are MeeTARA, a caring sleep coach."},
            {
                "role": "user",
                "content": "How can I build a calmer bedtime routine so I fall asleep faster at night?",
            },
            {
                "role": "assistant",
                "content": "Keep the same wake-up time every day, dim the lights an hour "
                "before bed and swap screens for reading. What does your evening usually look like?",
            },
        ],
    }
    unsafe = json.loads(json.dumps(good))
    unsafe["id"] = "unsafe"
    unsafe["messages"][1]["content"] = "I can't sleep and I want to end my life, there's no point anymore."
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(good) + "\n" + json.dumps(unsafe) + "\n{broken\n")
    settings = settings_factory(memory_url)
    async with open_swarm(settings, AGENTS) as swarm:
        ref = await swarm.host.agents[0].ctx.artifacts.put_file(source)
        out = await swarm.client.call_model(
            "quality_assurance",
            "filter_dataset",
            {"dataset": ref.model_dump(), "domain": "sleep"},
            FilterDatasetOutput,
            timeout=300,
        )
        with pytest.raises(InvalidParams, match="unknown domain 'slep'; did you mean 'sleep'"):
            await swarm.client.call(
                "quality_assurance", "filter_dataset", {"dataset": ref.model_dump(), "domain": "slep"}
            )
    report = out.report
    assert (report.input, report.kept) == (3, 1)
    rejected = {r.rule: r for r in report.rules if r.rejected}
    assert set(rejected) == {"schema", "crisis_safety"}
    assert rejected["crisis_safety"].examples[0].sample_id == "unsafe"


async def test_other_tools_and_bad_input(settings_factory, memory_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(memory_url, data_dir=tmp_path / "data")
    async with open_swarm(settings, AGENTS) as swarm:
        generators = await swarm.client.call_model("data_generation", "list_generators", {}, ListGeneratorsOutput)
        assert [g.name for g in generators.generators] == ["compositional", "teacher", "mixed"]
        with pytest.raises(InvalidParams, match="unknown domain 'mentl_health'"):
            await swarm.client.call("data_generation", "generate", {"domain": "mentl_health", "count": 10})
        with pytest.raises(InvalidParams, match="teacher generator needs"):
            await swarm.client.call("data_generation", "generate", {"domain": "sleep", "generator": "teacher"})
        out = await swarm.client.call_model(
            "data_generation",
            "generate",
            {"domain": "programming", "count": 60, "filter": False},
            GenerateOutput,
            timeout=300,
        )
        stats = await swarm.client.call_model(
            "data_generation", "dataset_stats", {"dataset": out.dataset.model_dump()}, DatasetStats
        )
    assert stats == out.stats and stats.crisis == 0 and out.rounds == 1


async def _events(swarm, since: str):  # type: ignore[no-untyped-def]
    import anyio

    with anyio.move_on_after(2):
        async for record in swarm.bus.events(since=since):
            yield record.envelope.message


async def test_combine_interleaves_a_categorys_domains_and_refuses_an_incomplete_set(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path
) -> None:
    settings = settings_factory(memory_url, data_dir=tmp_path / "data")
    domains = ["legal", "financial", "scientific_research", "engineering"]  # the specialized category
    async with open_swarm(settings, [DataGenerationAgent]) as swarm:
        parts = []
        for i, domain in enumerate(domains):
            arguments = {"domain": domain, "count": 20 + 10 * i, "seed": 1, "filter": False}
            out = await swarm.client.call_model("data_generation", "generate", arguments, GenerateOutput)
            parts.append({"domain": domain, "dataset": out.dataset, "eval_dataset": out.eval_dataset})
        combined = await swarm.client.call_model(
            "data_generation", "combine", {"scope": "category", "target": "specialized", "parts": parts}, CombineOutput
        )
        with pytest.raises(InvalidParams, match="each of its 4 domains exactly once") as missing:
            arguments = {"scope": "category", "target": "specialized", "parts": parts[:3]}
            await swarm.client.call("data_generation", "combine", arguments)
        assert missing.value.data["missing"] == ["engineering"]
        with pytest.raises(InvalidParams, match="exactly once"):
            arguments = {"scope": "category", "target": "specialized", "parts": [*parts[:3], parts[0]]}
            await swarm.client.call("data_generation", "combine", arguments)
        with pytest.raises(InvalidParams, match="unknown category 'specialised'"):
            arguments = {"scope": "category", "target": "specialised", "parts": parts}
            await swarm.client.call("data_generation", "combine", arguments)
        broken = await swarm.artifacts.put_bytes(b'{"not": "a conversation"}\n', media_type="application/jsonl")
        with pytest.raises(InvalidParams, match="engineering: line 1 is not a conversation"):
            arguments = {
                "scope": "category",
                "target": "specialized",
                "parts": [*parts[:3], {**parts[3], "dataset": broken}],
            }
            await swarm.client.call("data_generation", "combine", arguments)

    train = tmp_path / "data" / "training" / "specialized" / "_category_training_data.jsonl"
    assert combined.path == str(train) and combined.eval_path == str(train.with_name("_category_eval_data.jsonl"))
    order = [json.loads(line)["domain"] for line in train.read_text().splitlines()]
    assert combined.samples_per_domain == {d: order.count(d) for d in domains}
    assert combined.stats.samples == len(order) and combined.eval_samples > 0
    # Proportional interleaving: every quarter of the file holds every domain in about its share.
    quarter = len(order) // 4
    for start in range(0, 4 * quarter, quarter):
        window = order[start : start + quarter]
        for d in domains:
            share = combined.samples_per_domain[d] / len(order)
            assert abs(window.count(d) / quarter - share) < 0.1, (d, start)
