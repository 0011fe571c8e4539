"""Which of llama.cpp's built-in pre-tokenizers reproduces a Hugging Face tokenizer's.

A GGUF file does not carry the pre-tokenizer (how text is split before BPE merges): it names one
that llama.cpp implements (``tokenizer.ggml.pre``). llama.cpp's converter picks the name by hashing
the reference tokenizer's output on a test text; here it is read from ``tokenizer.json`` itself, so
a tokenizer that matches none of the known splits is refused instead of being split wrongly (a
model that sees "2024" as one token in training and four in llama.cpp answers worse, silently).
"""

from __future__ import annotations

from typing import Any

from agents.llm.architectures import UnsupportedArchitecture

__all__ = ["llama_cpp_pre_tokenizer"]

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_TIKTOKEN_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_SPLIT_REGEXES = {
    # Llama 3.x (tiktoken cl100k-style: numbers in groups of up to three digits).
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}" + _TIKTOKEN_TAIL: "llama-bpe",
    # Qwen2 / Qwen2.5 / Qwen3: the same with every digit on its own.
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _TIKTOKEN_TAIL: "qwen2",
}


def _steps(pre_tokenizer: dict[str, Any] | None) -> list[dict[str, Any]]:
    if pre_tokenizer is None:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return [s for p in pre_tokenizer.get("pretokenizers", []) for s in _steps(p)]
    return [pre_tokenizer]


def _describe(step: dict[str, Any]) -> str:
    details = {k: v for k, v in step.items() if k not in {"type", "add_prefix_space", "trim_offsets"}}
    return f"{step.get('type')}{details}" if details else str(step.get("type"))


def llama_cpp_pre_tokenizer(spec: dict[str, Any]) -> str:
    """``tokenizer.ggml.pre`` for a byte-level BPE ``tokenizer.json`` (parsed).

    Raises:
        UnsupportedArchitecture: the split is none that llama.cpp reproduces (e.g. SentencePiece's
            Metaspace), with what it is.
    """
    steps = _steps(spec.get("pre_tokenizer"))
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's own split, inside ByteLevel
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # SmolLM / StarCoder: digits one by one, then GPT-2's split
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = steps[0].get("pattern", {}).get("Regex")
        if pattern in _SPLIT_REGEXES and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert"):
            return _SPLIT_REGEXES[pattern]
    split = " + ".join(_describe(s) for s in steps) or "none"
    raise UnsupportedArchitecture(
        f"the base's pre-tokenizer ({split}) is not one llama.cpp reproduces from a name (supported: GPT-2's, "
        "SmolLM's, Llama 3's and Qwen2's byte-level splits); give the base as a .gguf file "
        "(llama.cpp's convert_hf_to_gguf.py), whose tokenizer is then copied as it is"
    )
