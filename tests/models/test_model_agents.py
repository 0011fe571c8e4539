"""train -> create_gguf -> validate_model -> deploy as tool calls on an embedded swarm."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from agents.data_generation import DataGenerationAgent
from agents.data_generation.stats import dataset_stats
from agents.gguf_creation import GgufCreationAgent
from agents.gpu_optimization import GpuOptimizationAgent
from agents.llm.chat_template import render_chat
from agents.llm.gguf_fields import read_gguf
from agents.quality_assurance import QualityAssuranceAgent
from agents.quality_assurance.model_validation import gguf_format_problems
from agents.testing import tiny_catalog
from protocol import InvalidParams, ProgressNotification
from protocol.agents.data_generation import GenerateOutput
from protocol.agents.gguf_creation import CreateGgufOutput, DeployOutput, ListModelsOutput
from protocol.agents.gpu_optimization import TrainingPlan, TrainOutput
from protocol.agents.quality_assurance import ValidateModelOutput
from runtime import load_catalog, open_swarm

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(1500)]

AGENTS = [GpuOptimizationAgent, GgufCreationAgent, QualityAssuranceAgent]
LONG = 1200.0


async def test_the_chain_on_the_tiny_model_ends_at_a_qa_refusal(  # type: ignore[no-untyped-def]
    settings_factory,
    memory_url: str,
    tmp_path: Path,
    tiny_gguf: Path,
    model_cache: Path,
    conversations: tuple[Path, Path],
) -> None:
    """A random 2-layer model can be made to beat its own base, but it cannot chat: QA must say no.

    Judged by the real pass mark, on a few messages of the evaluation set (one crisis message of
    each kind) with short replies: a random model's replies never end, the full set is the demo's.
    """
    train, evaluation = conversations
    system = dataset_stats(train).main_system_prompt  # as the Conductor picks it
    assert system is not None
    target = load_catalog().categories["healthcare"].quality_target
    catalog = tiny_catalog(tmp_path / "catalog", healthcare_target=target, crisis_per_kind=1)
    settings = settings_factory(memory_url, model_cache_dir=model_cache, catalog_dir=catalog)
    async with open_swarm(settings, AGENTS) as swarm:
        artifacts = swarm.artifacts
        dataset, eval_dataset = await artifacts.put_file(train), await artifacts.put_file(evaluation)
        job = {
            "target": "general_health",
            "dataset": dataset.model_dump(by_alias=True),
            "eval_dataset": eval_dataset.model_dump(by_alias=True),
            "base_model": str(tiny_gguf),
            "training": {"max_steps": 8, "effective_batch": 4, "learning_rate": 2e-3},
        }
        plan = await swarm.client.call_model("gpu_optimization", "plan_training", job, TrainingPlan)
        assert plan.max_steps == 8 and plan.precision == "fp32"
        since = await swarm.bus.transport.last_id(swarm.bus.keys.events)
        trained = await swarm.client.call_model("gpu_optimization", "train", job, TrainOutput, timeout=LONG)
        assert trained.metrics.eval_loss < trained.metrics.eval_loss_base  # type: ignore[operator]
        assert trained.adapter_dir.endswith("models/trained/healthcare/general_health")

        created = await swarm.client.call_model(
            "gguf_creation",
            "create_gguf",
            {
                "target": "general_health",
                "adapter": trained.adapter.model_dump(by_alias=True),
                "base_model": str(tiny_gguf),
                "training": trained.metrics.model_dump(),
                "system_prompt": system,
            },
            CreateGgufOutput,
            timeout=LONG,
        )
        (model,) = created.models
        # Built and checked under the data folder; the models folder is only written by a deploy.
        folder = settings.data_dir / "models" / "builds" / "D_domain_specific" / "healthcare"
        assert {Path(f.path).name for f in model.files} == {
            "meetara_general_health_lora_f16.gguf",
            "meetara_general_health_Q4_K_M.gguf",
        }
        assert Path(model.metadata_path) == folder / "general_health_metadata.json"
        metadata = json.loads(Path(model.metadata_path).read_text())
        assert metadata["lora"]["r"] == 8 and metadata["training"]["steps"] == 8
        assert all(f["sha256"] and f["size"] > 0 for f in metadata["files"])
        # The merged file sends the trained system prompt to a conversation that brings none.
        assert metadata["system_prompt"] == system
        merged = next(Path(f.path) for f in model.files if f.kind == "merged")

        template = read_gguf(merged).value("tokenizer.chat_template")
        assert render_chat(template, [{"role": "user", "content": "hi"}]).count(system) == 1
        assert gguf_format_problems(merged, "merged", system_prompt=system) == []
        assert gguf_format_problems(merged, "merged", system_prompt="You are someone else.") == [
            f"{merged.name}: the chat template does not send the trained system prompt"
        ]

        validated = await swarm.client.call_model(
            "quality_assurance",
            "validate_model",
            {
                "metadata": model.metadata.model_dump(by_alias=True),
                "eval_dataset": eval_dataset.model_dump(by_alias=True),
                "base_model": str(tiny_gguf),
                "max_eval_samples": 8,
                "generation_prompts": 2,
            },
            ValidateModelOutput,
            timeout=LONG,
        )
        report = validated.report
        assert Path(validated.report_path) == folder / "general_health_qa_report.json"
        names = {c.name: c.passed for c in report.checks}
        assert names["adapter_format"] and names["merged_format"] and names["adapted_loads"] and names["merged_loads"]
        assert names["perplexity_improves"]
        assert report.perplexity_adapted < report.perplexity_base  # type: ignore[operator]
        assert not report.passed and report.reasons and report.score < report.target
        assert any(not ok for name, ok in names.items() if "crisis" in name or "reply" in name)

        with pytest.raises(InvalidParams, match="QA did not pass"):
            await swarm.client.call(
                "gguf_creation",
                "deploy",
                {
                    "metadata": model.metadata.model_dump(by_alias=True),
                    "qa_report": validated.report_artifact.model_dump(by_alias=True),
                },
            )
        listed = await swarm.client.call_model("gguf_creation", "list_models", {}, ListModelsOutput)
        assert listed.models == [] and not settings.models_dir.exists()
        progress = []
        with anyio.move_on_after(2):
            async for record in swarm.bus.events(since=since):
                if isinstance(record.envelope.message, ProgressNotification):
                    progress.append(record.envelope.message)
        assert any("loss" in (p.params.message or "") for p in progress)


@pytest.mark.slow
async def test_general_health_on_smollm2_is_trained_converted_validated_and_deployed(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path, model_cache: Path
) -> None:
    """Real filtered data and the pip-shipped base: a model that beats the base, validated, deployed if it passes.

    The real quality mark, and the evaluation set cut to four ordinary messages and one crisis
    message of each kind: the full set costs ten CPU minutes here and is measured by the demo.
    """
    target = load_catalog().categories["healthcare"].quality_target
    catalog = tiny_catalog(tmp_path / "catalog", healthcare_target=target, crisis_per_kind=1, reply_tokens=None)
    settings = settings_factory(memory_url, model_cache_dir=model_cache, catalog_dir=catalog)
    async with open_swarm(settings, [DataGenerationAgent, *AGENTS]) as swarm:
        data = await swarm.client.call_model(
            "data_generation",
            "generate",
            {"domain": "general_health", "count": 120, "seed": 1},
            GenerateOutput,
            timeout=LONG,
        )
        job = {
            "target": "general_health",
            "dataset": data.dataset.model_dump(by_alias=True),
            "eval_dataset": data.eval_dataset.model_dump(by_alias=True),
            "training": {"max_steps": 8, "effective_batch": 2, "learning_rate": 1e-3},
        }
        trained = await swarm.client.call_model("gpu_optimization", "train", job, TrainOutput, timeout=LONG)
        created = await swarm.client.call_model(
            "gguf_creation",
            "create_gguf",
            {
                "target": "general_health",
                "adapter": trained.adapter.model_dump(by_alias=True),
                "training": trained.metrics.model_dump(),
                "data_stats": data.stats.model_dump(),
            },
            CreateGgufOutput,
            timeout=LONG,
        )
        (model,) = created.models
        adapter = next(f for f in model.files if f.kind == "adapter")
        assert adapter.size < 12_000_000  # a few MB, applied on the shared base at run time
        validated = await swarm.client.call_model(
            "quality_assurance",
            "validate_model",
            {
                "metadata": model.metadata.model_dump(by_alias=True),
                "eval_dataset": data.eval_dataset.model_dump(by_alias=True),
                "max_eval_samples": 16,
                "generation_prompts": 2,
            },
            ValidateModelOutput,
            timeout=LONG,
        )
        report = validated.report
        assert report.perplexity_adapted < report.perplexity_base * 0.9  # type: ignore[operator]
        assert report.perplexity_merged < report.perplexity_base * 0.9  # type: ignore[operator]
        names = {c.name: c.passed for c in report.checks}
        for must in ("adapter_format", "merged_format", "adapted_loads", "merged_loads", "perplexity_improves"):
            assert names[must], must
        request = {
            "metadata": model.metadata.model_dump(by_alias=True),
            "qa_report": validated.report_artifact.model_dump(by_alias=True),
        }
        if not report.passed:
            # A few CPU minutes teach SmolLM2-135M the domain (perplexity) but not always how to
            # answer; the gate must then hold, refusing it for what it says, never for its files.
            assert report.reasons, "a refused model says why"
            structural = ("format", "loads", "hash_matches", "perplexity_improves")
            failed = [c.name for c in report.checks if not c.passed]
            assert failed and not [n for n in failed if any(k in n for k in structural)], failed
            with pytest.raises(InvalidParams, match="QA did not pass"):
                await swarm.client.call("gguf_creation", "deploy", request)
            return
        deployed = await swarm.client.call_model("gguf_creation", "deploy", request, DeployOutput)
    assert deployed.entry.lane == "production" and deployed.entry.version == "v1"
    manifest = json.loads((settings.models_dir / "manifest.json").read_text())
    assert [m["model_id"] for m in manifest["models"]] == ["meetara_general_health"]
    layout = settings.models_dir / "D_domain_specific" / "healthcare"
    for f in deployed.entry.files:
        assert (settings.models_dir / f.path).is_file()
        assert (layout / Path(f.path).name).stat().st_ino == (settings.models_dir / f.path).stat().st_ino
    assert json.loads((layout / "general_health_metadata.json").read_text())["version"] == "v1"


async def test_a_base_of_an_unsupported_architecture_is_refused_at_plan_training(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path, conversations: tuple[Path, Path]
) -> None:
    from transformers import GPT2Config

    gpt2 = tmp_path / "tiny-gpt2"
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(gpt2)
    async with open_swarm(settings_factory(memory_url), [GpuOptimizationAgent]) as swarm:
        dataset = await swarm.artifacts.put_file(conversations[0])
        job = {"target": "general_health", "dataset": dataset.model_dump(by_alias=True), "base_model": str(gpt2)}
        for tool in ("plan_training", "train"):
            with pytest.raises(InvalidParams) as refused:
                await swarm.client.call("gpu_optimization", tool, job)
            supported = "gemma2, llama, mistral, phi3, qwen2, qwen3"
            assert f"'gpt2' is not supported; supported: {supported}" in str(refused.value)
    assert not (tmp_path / "data" / "models" / "trained").exists()  # nothing was trained
