"""Which of llama.cpp's built-in pre-tokenizers reproduces a Hugging Face tokenizer's.

For byte-level BPE, a GGUF file does not carry the pre-tokenizer (how text is split before BPE merges): it names one
that llama.cpp implements (``tokenizer.ggml.pre``). llama.cpp's converter picks the name by hashing
the reference tokenizer's output on a test text; here it is read from ``tokenizer.json`` itself, so
a tokenizer that matches none of the known splits is refused instead of being split wrongly (a
model that sees "2024" as one token in training and four in llama.cpp answers worse, silently).
"""

from __future__ import annotations

from typing import Any

from agents.llm.architectures import UnsupportedArchitecture

__all__ = ["llama_cpp_pre_tokenizer", "sentencepiece_space_prefix"]

_SPACE = "\u2581"
"""SentencePiece's visible space, ▁."""

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_TIKTOKEN_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_SPLIT_REGEXES = {
    # Llama 3.x (tiktoken cl100k-style: numbers in groups of up to three digits).
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}" + _TIKTOKEN_TAIL: "llama-bpe",
    # Qwen2 / Qwen2.5 / Qwen3: the same with every digit on its own.
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _TIKTOKEN_TAIL: "qwen2",
}


def _describe(step: dict[str, Any]) -> str:
    details = {k: v for k, v in step.items() if k not in {"type", "add_prefix_space", "trim_offsets"}}
    return f"{step.get('type')}{details}" if details else str(step.get("type"))


def llama_cpp_pre_tokenizer(spec: dict[str, Any]) -> str:
    """``tokenizer.ggml.pre`` for a byte-level BPE ``tokenizer.json`` (parsed).

    Raises:
        UnsupportedArchitecture: the split is none that llama.cpp reproduces (e.g. SentencePiece's
            Metaspace), with what it is.
    """
    steps = _steps_of(spec.get("pre_tokenizer"), "pretokenizers")
    kinds = [s.get("type") for s in steps]
    if any(s.get("type") == "ByteLevel" and s.get("add_prefix_space") for s in steps):
        kinds = []  # a space put before the text: llama.cpp's byte-level splits put none
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
        "SmolLM's, Llama 3's and Qwen2's byte-level splits, and SentencePiece's); give the base as a .gguf file "
        "(llama.cpp's convert_hf_to_gguf.py), whose tokenizer is then copied as it is"
    )


def sentencepiece_space_prefix(spec: dict[str, Any]) -> bool | None:
    """For a SentencePiece BPE model as transformers holds it (byte fallback, spaces as ▁): whether
    a ▁ is put before the text (llama.cpp's ``add_space_prefix``). None: not a SentencePiece model."""
    if not spec["model"].get("byte_fallback"):
        return None
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "Metaspace" and pre.get("replacement") == _SPACE and not pre.get("split", True):
        # (split=True cuts the text at every ▁, so runs of spaces never form the ▁▁ pieces that
        # llama.cpp and SentencePiece do form: not reproduced.)
        return bool(pre.get("prepend_scheme", "always") in {"first", "always"})
    normalizers = _steps_of(spec.get("normalizer"), "normalizers")
    replaces_spaces = any(
        n.get("type") == "Replace" and n.get("pattern", {}).get("String") == " " and n.get("content") == _SPACE
        for n in normalizers
    )
    if not pre and replaces_spaces:  # older conversions: Prepend("▁") + Replace(" ", "▁") as normalizers
        return any(n.get("type") == "Prepend" and n.get("prepend") == _SPACE for n in normalizers)
    return None


def _steps_of(step: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    if step is None:
        return []
    if step.get("type") == "Sequence":
        return [s for inner in step.get(key, []) for s in _steps_of(inner, key)]
    return [step]
