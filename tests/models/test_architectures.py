"""Every architecture of the table, proven on CPU: a tiny random model of it is LoRA-trained a few
steps, converted (adapter GGUF, merged F16 and Q8_0) and run in llama.cpp, whose next-token logits
must match transformers + peft on fixed prompts.

Tolerances, relative to the reference logits' spread (max - min over the vocabulary):
- F32 base + adapter GGUF (F32): 1e-3: both sides compute in float32; what remains is the order of
  summation and llama.cpp's own kernels.
- merged F16: 2e-3: each weight is rounded to 11 significant bits (relative error up to 2^-11 ≈
  5e-4); over a 64-wide dot product and two layers the errors partly cancel (measured 3-4e-4).
- merged Q8_0: correlation only (> 0.99): 8-bit blocks are lossy by design.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.gguf_creation.adapter_gguf import write_adapter_gguf
from agents.gguf_creation.quantize import quantize
from agents.llm import architectures
from agents.llm.adapter_file import AdapterFile, apply_adapter, read_adapter, write_adapter
from agents.llm.architectures import ARCHITECTURES, UnsupportedArchitecture, architecture_of
from agents.llm.base_model import check_base_architecture, load_base_model, load_tokenizer, resolve_base_model
from agents.llm.default_base import default_base_gguf
from agents.llm.model_gguf import MetadataValue, tokenizer_metadata_from_gguf, write_model_gguf
from agents.quality_assurance.model_validation import gguf_format_problems
from agents.testing import TINY_ARCHITECTURES, build_tiny_folder, tiny_model
from protocol import InvalidParams
from tests.models.logits import agreement, llama_logits, max_difference, torch_logits

pytestmark = pytest.mark.timeout(600)

PROMPTS = [
    "<|im_start|>user\nI keep waking up at 4am and cannot get back to sleep.<|im_end|>\n<|im_start|>assistant\n",
    "Paying off a credit card first, or saving an emergency fund: which comes first?",
]
F32_TOLERANCE = 1e-3
F16_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def tokenizer() -> list[MetadataValue]:
    return tokenizer_metadata_from_gguf(default_base_gguf())


@pytest.fixture(scope="module")
def prompt_ids() -> list[list[int]]:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(default_base_gguf()), vocab_only=True, verbose=False)
    return [vocab.tokenize(p.encode(), add_bos=False, special=True) for p in PROMPTS]


def lora_trained(model_type: str, tmp_path: Path) -> tuple[torch.nn.Module, AdapterFile]:
    """The tiny base, and a LoRA adapter trained on it for a few steps (saved and read back as a job does)."""
    from peft import LoraConfig, get_peft_model

    base = tiny_model(model_type)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        ids = torch.randint(0, base.config.vocab_size, (2, 24), generator=generator)
        peft_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    path = tmp_path / "adapter.safetensors"
    write_adapter(peft_model, path, base_model=f"tiny-{model_type}")
    return tiny_model(model_type), read_adapter(path)


def logits_of(model: torch.nn.Module, prompts: list[list[int]]) -> np.ndarray:
    return np.concatenate([torch_logits(model, ids) for ids in prompts])


def cpp_logits_of(path: Path, prompts: list[list[int]], lora: Path | None = None) -> np.ndarray:
    return np.concatenate([llama_logits(path, ids, lora) for ids in prompts])


def convert_and_compare(
    model_type: str, tmp_path: Path, prompts: list[list[int]], tokenizer: list[MetadataValue]
) -> dict[str, tuple[float, float]]:
    """(top-1 agreement, max difference) of each llama.cpp file against transformers + peft.

    For Q8_0 the second figure is 1 - the correlation of all logits.
    """
    base, adapter = lora_trained(model_type, tmp_path)
    base_f32 = tmp_path / "base-f32.gguf"
    write_model_gguf(base.state_dict(), base.config, tokenizer, base_f32, name="base", dtype="F32")
    adapter_gguf = tmp_path / "adapter.gguf"
    write_adapter_gguf(adapter, adapter_gguf, config=base.config, dtype="F32", name="lora")
    assert gguf_format_problems(adapter_gguf, "adapter") == []

    before = logits_of(base, prompts)
    adapted = apply_adapter(base, adapter)
    after = logits_of(adapted, prompts)
    assert max_difference(before, after) > 0.05  # the adapter does move them

    merged = adapted.merge_and_unload()
    f16 = tmp_path / "merged-f16.gguf"
    write_model_gguf(merged.state_dict(), merged.config, tokenizer, f16, name="merged", dtype="F16")
    assert gguf_format_problems(f16, "merged") == []
    q8 = tmp_path / "merged-q8_0.gguf"
    quantize(f16, q8, "Q8_0")

    results = {}
    for label, path, lora, reference in (
        ("base", base_f32, None, before),
        ("adapter", base_f32, adapter_gguf, after),
        ("f16", f16, None, after),
        ("q8_0", q8, None, after),
    ):
        cpp = cpp_logits_of(path, prompts, lora)
        top1, correlation = agreement(reference, cpp)
        results[label] = (top1, 1 - correlation if label == "q8_0" else max_difference(reference, cpp))
    return results


@pytest.mark.parametrize("model_type", sorted(TINY_ARCHITECTURES))
def test_each_architecture_converts_and_runs_in_llama_cpp_as_in_transformers(
    model_type: str, tmp_path: Path, prompt_ids: list[list[int]], tokenizer: list[MetadataValue]
) -> None:
    results = convert_and_compare(model_type, tmp_path, prompt_ids, tokenizer)
    for label in ("base", "adapter"):
        top1, diff = results[label]
        assert top1 >= 0.99 and diff <= F32_TOLERANCE, (label, results)
    top1, diff = results["f16"]
    assert top1 >= 0.99 and diff <= F16_TOLERANCE, results
    assert results["q8_0"][1] < 0.01, results  # 1 - correlation


@pytest.mark.parametrize(
    ("model_type", "broken"),
    [("llama", {"permute_qk": False}), ("gemma2", {"norm_offset": 0.0}), ("mistral", {"gguf_arch": "QWEN2"})],
)
def test_a_wrong_transform_fails_the_comparison(
    model_type: str,
    broken: dict[str, object],
    tmp_path: Path,
    prompt_ids: list[list[int]],
    tokenizer: list[MetadataValue],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(ARCHITECTURES, model_type, dataclasses.replace(ARCHITECTURES[model_type], **broken))  # type: ignore[arg-type]
    base = tiny_model(model_type)
    path = tmp_path / "base-f32.gguf"
    write_model_gguf(base.state_dict(), base.config, tokenizer, path, name="broken", dtype="F32")
    reference, cpp = logits_of(base, prompt_ids), cpp_logits_of(path, prompt_ids)
    top1, diff = agreement(reference, cpp)[0], max_difference(reference, cpp)
    assert top1 < 0.99 or diff > F32_TOLERANCE, (top1, diff)  # what the passing test demands, failed


def test_an_unsupported_architecture_is_refused_with_the_supported_list() -> None:
    from transformers import GPT2Config

    with pytest.raises(UnsupportedArchitecture, match=r"'gpt2' is not supported; supported: gemma2, llama, mistral"):
        architecture_of(GPT2Config())
    assert architectures.supported_model_types() == ["gemma2", "llama", "mistral", "phi3", "qwen2", "qwen3"]


def test_a_base_folder_is_checked_from_its_config_and_tokenizer_alone(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    assert check_base_architecture(resolve_base_model(str(build_tiny_folder(tmp_path / "qwen2", "qwen2")))) == "qwen2"
    unigram = tmp_path / "unigram"
    LlamaConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1).save_pretrained(unigram)
    (unigram / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram"}}))
    with pytest.raises(UnsupportedArchitecture, match=r"Unigram tokenizer, which cannot be exported.*\.gguf file"):
        check_base_architecture(resolve_base_model(str(unigram)))


def test_a_hub_id_is_read_from_the_local_cache_and_nothing_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import socket

    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--meetara-test--tiny-qwen2"
    shutil.copytree(build_tiny_folder(tmp_path / "qwen2", "qwen2"), repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    lookups: list[str] = []

    def no_network(host: str, *args: object, **kwargs: object) -> list[object]:
        lookups.append(host)
        raise OSError(f"no network in this test ({host})")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    base = resolve_base_model("meetara-test/tiny-qwen2")
    assert check_base_architecture(base) == "qwen2"
    model = load_base_model(base, tmp_path / "cache", dtype=torch.float32)
    assert type(model).__name__ == "Qwen2ForCausalLM" and load_tokenizer(base, tmp_path / "cache").chat_template
    with pytest.raises(InvalidParams, match=r"meetara-test/absent is not in the local Hugging Face cache"):
        check_base_architecture(resolve_base_model("meetara-test/absent"))
    assert lookups == []


def test_a_base_folder_without_all_its_weights_is_refused_at_the_check(tmp_path: Path) -> None:
    folder = build_tiny_folder(tmp_path / "qwen2", "qwen2")
    (folder / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(InvalidParams, match=r"has no safetensors weights .*a partial download"):
        check_base_architecture(resolve_base_model(str(folder)))
    index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}  # fmt: skip
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "elsewhere.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    with pytest.raises(InvalidParams, match=r"lacks 1 weight shard\(s\) .*model-00002-of-00002"):
        check_base_architecture(resolve_base_model(str(folder)))
