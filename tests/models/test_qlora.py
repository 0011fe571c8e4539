"""QLoRA: LoRA trained on a base quantized to 4-bit NF4 (bitsandbytes).

Training on a 4-bit base runs only on CUDA in the product (refused elsewhere, before any work); the
quantization itself runs on CPU, so the conversion chain is proven here: an adapter trained on the
4-bit base of a tiny model is written, converted to GGUF and merged into the *full-precision* base,
and llama.cpp runs both as transformers + peft does. What the merge costs: the adapter learnt to
correct the quantized weights, and is applied to the unquantized ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.gguf_creation.adapter_gguf import write_adapter_gguf
from agents.gpu_optimization.planning import plan_training
from agents.gpu_optimization.trainer import TrainingRun, run_training
from agents.llm.adapter_file import apply_adapter, read_adapter, write_adapter
from agents.llm.base_model import BaseModelSource, load_base_model, resolve_base_model
from agents.llm.default_base import default_base_gguf
from agents.llm.model_gguf import tokenizer_metadata_from_gguf, write_model_gguf
from agents.testing import build_tiny_folder
from protocol import InvalidParams
from protocol.agents.gpu_optimization import DeviceProfile, TrainingOverrides, TrainInput
from runtime import load_catalog
from tests.models.logits import agreement, llama_logits, max_difference, torch_logits

pytestmark = pytest.mark.timeout(600)

TEXT = (
    "If someone is in danger right now, call your local emergency number. "
    "Sleep improves with a fixed wake time, daylight in the morning and no screens in bed. "
    "An emergency fund of three months of expenses comes before paying off low-interest debt. "
)
DATASET = {"uri": "file:///d.jsonl", "sha256": "0" * 64, "size": 1, "name": "d.jsonl", "mediaType": "application/jsonl"}
CPU = DeviceProfile(
    kind="cpu",
    name="cpu",
    memory_gb=24,
    compute_capability=None,
    bf16=False,
    device_count=0,
    cpu_threads=2,
    torch_version="2",
)


def _job(**training: object) -> TrainInput:
    return TrainInput(target="general_health", dataset=DATASET, training=TrainingOverrides(**training))  # type: ignore[arg-type]


def test_qlora_is_refused_on_a_machine_without_cuda_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InvalidParams, match=r"QLoRA needs a CUDA GPU .* this device is cpu"):
        plan_training(_job(method="qlora"), CPU, load_catalog())
    # A plan that says QLoRA on CPU (made elsewhere) is refused by the trainer before it reads anything.
    plan = plan_training(_job(), CPU, load_catalog()).model_copy(update={"method": "qlora"})
    run = TrainingRun(
        plan=plan,
        base=resolve_base_model(None),
        cache_dir=tmp_path,
        run_dir=tmp_path / "run",
        train_path=tmp_path / "no-such-data.jsonl",
        eval_path=None,
        run_key="qlora-on-cpu",
    )
    with pytest.raises(InvalidParams, match=r"QLoRA needs a CUDA GPU .* device is cpu"):
        run_training(run)


def _loss(model: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def _qlora_trained(base: BaseModelSource, cache: Path, ids: torch.Tensor, path: Path) -> float:
    """Train a LoRA adapter on the 4-bit base, save it as a job does; the trained model's loss on ``ids``."""
    from peft import LoraConfig, get_peft_model

    quantized = load_base_model(base, cache, dtype=torch.float32, four_bit=True)
    assert type(quantized.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    torch.manual_seed(0)
    model = get_peft_model(quantized, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(30):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    write_adapter(model, path, base_model="tiny-llama")
    return _loss(model, ids)


def test_an_adapter_trained_on_a_4_bit_base_converts_and_merges_against_the_full_precision_base(
    tmp_path: Path,
) -> None:
    from transformers import AutoTokenizer

    folder = build_tiny_folder(tmp_path / "base", "llama")
    base = resolve_base_model(str(folder))
    ids = torch.tensor([AutoTokenizer.from_pretrained(folder)(TEXT)["input_ids"]])
    qlora_loss = _qlora_trained(base, tmp_path / "cache", ids, tmp_path / "adapter.safetensors")
    adapter = read_adapter(tmp_path / "adapter.safetensors")

    full = load_base_model(base, tmp_path / "cache", dtype=torch.float32)
    base_loss = _loss(full, ids)
    tokenizer = tokenizer_metadata_from_gguf(default_base_gguf())
    base_f32, adapter_gguf, merged_f16 = tmp_path / "base.gguf", tmp_path / "adapter.gguf", tmp_path / "merged.gguf"
    write_model_gguf(full.state_dict(), full.config, tokenizer, base_f32, name="base", dtype="F32")
    adapted = apply_adapter(full, adapter)
    merged_loss = _loss(adapted, ids)
    # The adapter still does its job on the unquantized base: most of what it learnt carries over.
    learnt = base_loss - qlora_loss
    assert learnt > 2.0, (base_loss, qlora_loss)
    assert base_loss - merged_loss > 0.8 * learnt, (base_loss, qlora_loss, merged_loss)
    print(
        f"perplexity: base {math.exp(base_loss):.1f}, 4-bit + adapter {math.exp(qlora_loss):.2f}, "
        f"full precision + adapter {math.exp(merged_loss):.2f}"
    )

    # llama.cpp runs the adapter GGUF over the full-precision base, and the merged model, as peft does.
    write_adapter_gguf(adapter, adapter_gguf, config=full.config, dtype="F32", name="qlora")
    prompt = ids[0].tolist()
    reference = torch_logits(adapted, prompt)
    merged = adapted.merge_and_unload()
    write_model_gguf(merged.state_dict(), merged.config, tokenizer, merged_f16, name="merged", dtype="F16")
    for path, lora, tolerance in ((base_f32, adapter_gguf, 1e-3), (merged_f16, None, 2e-3)):
        cpp = llama_logits(path, prompt, lora)
        top1, _ = agreement(reference, cpp)
        assert top1 >= 0.99 and max_difference(reference, cpp) <= tolerance, (path.name, top1)
    assert not np.allclose(
        reference, torch_logits(load_base_model(base, tmp_path / "cache", dtype=torch.float32), prompt)
    )
