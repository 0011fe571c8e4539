"""GGUF files from our writers, checked against transformers + peft through llama.cpp itself."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.gguf_creation.adapter_gguf import write_adapter_gguf
from agents.gguf_creation.quantize import quantization_types, quantize
from agents.llm.adapter_file import AdapterFile, apply_adapter
from agents.llm.architectures import UnsupportedArchitecture
from agents.llm.base_model import check_base_architecture, load_base_model, load_tokenizer, resolve_base_model
from agents.llm.model_gguf import tokenizer_metadata_from_gguf, write_model_gguf
from agents.llm.tokenizer_gguf import tokenizer_metadata_from_hf
from agents.quality_assurance.model_validation import gguf_format_problems
from protocol import InvalidParams
from tests.models.logits import agreement, llama_logits, torch_logits

pytestmark = pytest.mark.timeout(600)

CONVERSATION = [
    {"role": "system", "content": "You are a supportive general health assistant."},
    {"role": "user", "content": "I get headaches most afternoons at work and I am worried about it."},
    {"role": "assistant", "content": "That sounds uncomfortable. Regular breaks, water and a check-up can help."},
]


@pytest.fixture(scope="module")
def token_ids(tiny_gguf: Path, model_cache: Path) -> list[int]:
    tokenizer = load_tokenizer(resolve_base_model(str(tiny_gguf)), model_cache)
    ids = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    return list(ids)


def test_our_model_writer_matches_transformers_exactly(
    tiny_gguf: Path, model_cache: Path, token_ids: list[int]
) -> None:
    model = load_base_model(resolve_base_model(str(tiny_gguf)), model_cache, dtype=torch.float32)
    top1, corr = agreement(torch_logits(model, token_ids), llama_logits(tiny_gguf, token_ids))
    assert top1 == 1.0 and corr > 0.99999


def test_adapter_gguf_changes_llama_cpp_output_as_peft_changes_transformers(
    tiny_gguf: Path, model_cache: Path, trained_adapter: AdapterFile, token_ids: list[int], tmp_path: Path
) -> None:
    base = load_base_model(resolve_base_model(str(tiny_gguf)), model_cache, dtype=torch.float32)
    before = torch_logits(base, token_ids)
    adapted = apply_adapter(base, trained_adapter)
    after = torch_logits(adapted, token_ids)
    path = tmp_path / "adapter.gguf"
    pairs = write_adapter_gguf(trained_adapter, path, config=base.config, name="test adapter")
    assert pairs == 2 * 7  # two blocks, seven linear layers each
    assert gguf_format_problems(path, "adapter") == []

    base_cpp = llama_logits(tiny_gguf, token_ids)
    adapted_cpp = llama_logits(tiny_gguf, token_ids, lora=path)
    top1, corr = agreement(after, adapted_cpp)
    assert top1 >= 0.95 and corr > 0.999, (top1, corr)
    delta_corr = np.corrcoef((after - before).ravel(), (adapted_cpp - base_cpp).ravel())[0, 1]
    assert delta_corr > 0.99  # the adapter moves llama.cpp's logits the way it moves peft's
    assert np.abs(after - before).mean() > 0.05  # and it does move them

    f32 = tmp_path / "adapter-f32.gguf"
    write_adapter_gguf(trained_adapter, f32, config=base.config, name="test adapter", dtype="F32")
    assert f32.stat().st_size > path.stat().st_size * 1.8
    assert agreement(after, llama_logits(tiny_gguf, token_ids, lora=f32))[1] > 0.999


def test_merged_f16_and_quantized_models_agree_with_the_adapted_model(
    tiny_gguf: Path, model_cache: Path, trained_adapter: AdapterFile, token_ids: list[int], tmp_path: Path
) -> None:
    base = load_base_model(resolve_base_model(str(tiny_gguf)), model_cache, dtype=torch.float32)
    adapted = apply_adapter(base, trained_adapter)
    after = torch_logits(adapted, token_ids)
    merged = adapted.merge_and_unload()
    f16 = tmp_path / "merged-f16.gguf"
    write_model_gguf(merged.state_dict(), merged.config, tokenizer_metadata_from_gguf(tiny_gguf), f16, name="m")
    assert gguf_format_problems(f16, "merged") == []
    top1, corr = agreement(after, llama_logits(f16, token_ids))
    assert top1 >= 0.95 and corr > 0.999, (top1, corr)

    q8 = tmp_path / "merged-q8_0.gguf"
    quantize(f16, q8, "Q8_0")
    assert q8.stat().st_size < f16.stat().st_size
    assert agreement(after, llama_logits(q8, token_ids))[1] > 0.99
    assert {"Q4_K_M", "Q8_0", "Q3_K_S", "F16"} <= set(quantization_types())
    with pytest.raises(InvalidParams, match="unknown quantization"):
        quantize(f16, tmp_path / "x.gguf", "Q9_Z")
    assert not (tmp_path / "x.gguf").exists()


TRICKY_TEXTS = (
    "Hello world",
    "Drink water, rest and see a doctor if it persists.",
    "<|im_start|>user\nhi<|im_end|>",
    "Call 0800 123 4567 or 988; in 2024 it cost $3.14159!",
    "I'LL say it's fine...\n\n   indented\tand   spaced",
    "café, naïve, 日本語 and emoji 🙂",
)


def _pre_tokenizers() -> dict[str, object]:
    """Byte-level splits of the models people fine-tune, as tokenizer.json writes them."""
    from tokenizers import Regex
    from tokenizers import pre_tokenizers as pre

    tail = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    words = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"

    def split(pattern: str) -> object:
        return pre.Sequence(
            [pre.Split(Regex(pattern), behavior="isolated"), pre.ByteLevel(add_prefix_space=False, use_regex=False)]
        )

    return {
        "gpt-2": pre.ByteLevel(add_prefix_space=False, use_regex=True),
        "smollm": pre.Sequence([pre.Digits(individual_digits=True), pre.ByteLevel(add_prefix_space=False)]),
        "llama-bpe": split(words + r"|\p{N}{1,3}" + tail),
        "qwen2": split(words + r"|\p{N}" + tail),
    }


def test_tokenizer_exported_from_a_hugging_face_folder_tokenizes_like_transformers(
    tiny_gguf: Path, model_cache: Path, tmp_path: Path
) -> None:
    """Each byte-level split is named so llama.cpp splits as transformers does: the same ids on
    texts where the splits differ (digits, contractions, whitespace runs), for every split."""
    from llama_cpp import Llama

    base = resolve_base_model(str(tiny_gguf))
    tokenizer = load_tokenizer(base, model_cache)
    model = load_base_model(base, model_cache, dtype=torch.float32)
    seen = {}
    for name, pre_tokenizer in _pre_tokenizers().items():
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizer
        values = tokenizer_metadata_from_hf(tokenizer)
        assert next(v.value for v in values if v.key == "tokenizer.ggml.pre") == name
        path = tmp_path / f"{name}.gguf"
        write_model_gguf(model.state_dict(), model.config, values, path, name="hf", dtype="F32")
        llm = Llama(model_path=str(path), n_ctx=64, verbose=False, vocab_only=True)
        seen[name] = [tokenizer(text)["input_ids"] for text in TRICKY_TEXTS]
        for text, expected in zip(TRICKY_TEXTS, seen[name], strict=True):
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == expected, (name, text)
    # GPT-2's family and tiktoken's split these texts differently, so naming one for the other fails
    # above. (Within a family only digit grouping differs, which SmolLM2's vocabulary cannot show: it
    # has no multi-digit tokens.)
    assert seen["gpt-2"] != seen["qwen2"] and seen["smollm"] != seen["llama-bpe"]


def test_a_tokenizer_split_llama_cpp_cannot_reproduce_is_refused(tiny_gguf: Path, model_cache: Path) -> None:
    from tokenizers import pre_tokenizers as pre

    tokenizer = load_tokenizer(resolve_base_model(str(tiny_gguf)), model_cache)
    tokenizer.backend_tokenizer.pre_tokenizer = pre.Metaspace()  # SentencePiece's, converted to BPE
    with pytest.raises(UnsupportedArchitecture, match=r"pre-tokenizer \(Metaspace.*give the base as a \.gguf file"):
        tokenizer_metadata_from_hf(tokenizer)
    tokenizer.backend_tokenizer.pre_tokenizer = pre.ByteLevel(add_prefix_space=True)  # " " before every text
    with pytest.raises(UnsupportedArchitecture, match=r"pre-tokenizer \(ByteLevel"):
        tokenizer_metadata_from_hf(tokenizer)


def _sentencepiece_tokenizer(folder: Path) -> Any:
    """A SentencePiece BPE tokenizer (as Llama 2, Mistral, Gemma and Phi-3 ship one) trained here on a
    small text, loaded by transformers as those models' folders are."""
    import sentencepiece
    from transformers import AutoTokenizer

    folder.mkdir()
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(TRICKY_TEXTS[:2] + TRICKY_TEXTS[3:]) * 40)
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("space_prefix", [True, False])
def test_a_sentencepiece_tokenizer_exports_as_llama_cpp_s_own_and_tokenizes_like_transformers(
    tmp_path: Path, space_prefix: bool
) -> None:
    """Llama 2 / Mistral / Phi-3 put a space before the text, Gemma does not; both are exported."""
    from tokenizers import pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = _sentencepiece_tokenizer(tmp_path / "spm")
    if not space_prefix:
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=False)
    values = {v.key: v.value for v in tokenizer_metadata_from_hf(tokenizer)}
    assert values["tokenizer.ggml.model"] == "llama" and values["tokenizer.ggml.add_space_prefix"] is space_prefix
    assert values["tokenizer.ggml.token_type"][3:259] == [6] * 256  # <0x00>..<0xFF>: byte fallback
    shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4}
    # 416 rows for 400 tokens, rounded up as Qwen2.5's and Phi-3's are: padded with unused tokens.
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", vocab_size=416, **shape))
    path = tmp_path / "spm.gguf"
    write_model_gguf(
        model.state_dict(), model.config, tokenizer_metadata_from_hf(tokenizer), path, name="s", dtype="F32"
    )
    # Texts that start with a space are left out: transformers then skips its ▁ prefix, llama.cpp
    # and SentencePiece itself do not (a difference of the runtimes, not of the export).
    texts = TRICKY_TEXTS[:2] + TRICKY_TEXTS[3:] + ("zzqq words it never saw",)
    expected = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert _llama_cpp_ids(path, texts) == expected
    written = {v.key: v.value for v in tokenizer_metadata_from_gguf(path)}
    assert len(written["tokenizer.ggml.tokens"]) == 416 and written["tokenizer.ggml.tokens"][-1] == "[PAD415]"
    assert written["tokenizer.ggml.token_type"][400:] == [5] * 16  # unused
    # The scores carry the merge order: with them all equal, llama.cpp merges otherwise.
    flat = [
        dataclasses.replace(v, value=[0.0] * len(v.value)) if v.key == "tokenizer.ggml.scores" else v
        for v in tokenizer_metadata_from_hf(tokenizer)
    ]
    write_model_gguf(model.state_dict(), model.config, flat, tmp_path / "flat.gguf", name="s", dtype="F32")
    assert _llama_cpp_ids(tmp_path / "flat.gguf", texts) != expected
    # As a base folder (a Mistral-style one), it is accepted when the job is submitted.
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    assert check_base_architecture(resolve_base_model(str(tmp_path / "base"))) == "llama"


def _llama_cpp_ids(path: Path, texts: tuple[str, ...]) -> list[list[int]]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=64, verbose=False)  # weights too: their shapes must agree
    return [llm.tokenize(text.encode(), add_bos=False, special=True) for text in texts]


def test_a_corrupt_gguf_is_named_in_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 40)
    problems = gguf_format_problems(bad, "merged")
    assert problems and "broken.gguf" in problems[0]
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(InvalidParams, match=r"not GGUF.*fake\.gguf"):
        resolve_base_model(str(fake))
    with pytest.raises(InvalidParams, match="not found"):
        resolve_base_model(str(tmp_path / "missing.gguf"))
