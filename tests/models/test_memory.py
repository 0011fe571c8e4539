"""The training-memory estimate against the measured peak of real LoRA steps on CPU (within 30%)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.gpu_optimization.memory import estimate_training_memory, shape_of_config
from protocol.agents.gpu_optimization import ModelShape

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    # The tiny test model: the 49k-vocabulary logits dominate.
    "logits": {"vocab_size": 49152, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2},
    # A small vocabulary and 8 wider layers: the saved activations dominate.
    "activations": {"vocab_size": 512, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 8},
}


def measure(config: dict[str, object], *, micro_batch: int, sequence_length: int, lora_r: int) -> dict[str, float]:
    spec = {
        "model_type": "llama",
        "config": {**config, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
        "micro_batch": micro_batch,
        "sequence_length": sequence_length,
        "lora_r": lora_r,
    }
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.models.measure_memory", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_estimate_is_within_30_percent_of_a_measured_training_step(case: str) -> None:
    from transformers import LlamaConfig

    config = CASES[case]
    shape = shape_of_config(
        LlamaConfig(**config, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    )
    measured = measure(config, micro_batch=4, sequence_length=512, lora_r=8)
    estimate = estimate_training_memory(
        shape, base_format="fp32", lora_r=8, micro_batch=4, sequence_length=512, cuda=False
    )
    transient = estimate.activations_gb + estimate.logits_gb
    assert abs(transient - measured["transient_gb"]) <= 0.3 * measured["transient_gb"], (estimate, measured)
    # The built model: base weights and LoRA weights (fp32), before any gradient or optimizer state.
    built = estimate.weights_gb + estimate.lora_gb / 4
    assert abs(built - measured["model_gb"]) <= 0.3 * measured["model_gb"], (estimate, measured)


def test_parameter_counts_match_real_models() -> None:
    # Published sizes: SmolLM2-135M (134.5M), Qwen2.5-7B (7.62B).
    smollm2 = ModelShape(hidden=576, layers=30, intermediate=1536, heads=9, kv_heads=3, vocab=49152, tied=True)
    qwen7b = ModelShape(hidden=3584, layers=28, intermediate=18944, heads=28, kv_heads=4, vocab=152064)
    assert abs(smollm2.parameters / 134.5e6 - 1) < 0.01
    assert abs(qwen7b.parameters / 7.62e9 - 1) < 0.01


def test_the_plan_carries_the_memory_estimate_of_the_base_on_this_device(tiny_gguf: Path) -> None:
    from agents.gpu_optimization.memory import shape_of_base
    from agents.gpu_optimization.planning import plan_training
    from agents.llm.base_model import resolve_base_model
    from protocol.agents.gpu_optimization import DeviceProfile, TrainInput
    from runtime import load_catalog

    shape = shape_of_base(resolve_base_model(str(tiny_gguf)))
    assert shape is not None and (shape.hidden, shape.layers, shape.vocab, shape.tied) == (64, 2, 49152, True)
    dataset = {
        "uri": "file:///d.jsonl",
        "sha256": "0" * 64,
        "size": 1,
        "name": "d.jsonl",
        "mediaType": "application/jsonl",
    }
    job = TrainInput(target="general_health", dataset=dataset, base_model=str(tiny_gguf))  # type: ignore[arg-type]
    gpu = DeviceProfile(
        kind="cuda",
        name="T4",
        memory_gb=16,
        compute_capability="7.5",
        bf16=False,
        device_count=1,
        cpu_threads=8,
        torch_version="2",
    )
    plan = plan_training(job, gpu, load_catalog(), shape=shape)
    assert plan.memory is not None and plan.memory.logits_gb > plan.memory.activations_gb  # a 49k vocabulary, 2 layers
    assert any(r.startswith(f"memory estimate {plan.memory.total_gb:.2f} GB of 16 GB") for r in plan.reasons)
    assert plan.method == "lora"
    # A 14B base on the same 16 GB GPU: LoRA cannot fit even at micro-batch 1, QLoRA does.
    quality = load_catalog().tier("quality").base_shape
    plan = plan_training(job, gpu, load_catalog(), shape=quality)
    assert plan.method == "qlora" and plan.memory is not None and plan.memory.base_format == "nf4"
    assert any(r.startswith("QLoRA: LoRA on a 16-bit base needs") for r in plan.reasons), plan.reasons
    assert plan.memory.weights_gb < 10  # 14B: 4-bit linear layers plus 16-bit embeddings (bf16: 27 GB)
    # Asked for LoRA anyway, the plan keeps it and warns that it will not fit.
    lora_job = job.model_copy(update={"training": job.training.model_copy(update={"method": "lora"})})
    plan = plan_training(lora_job, gpu, load_catalog(), shape=quality)
    assert plan.method == "lora" and any("QLoRA (method qlora) would" in r for r in plan.reasons), plan.reasons
