"""A Hugging Face fast tokenizer → the ``tokenizer.*`` metadata of a GGUF file, as llama.cpp reads it.

Two families, as llama.cpp implements them:
- byte-level BPE (``gpt2`` in GGUF: GPT-2, SmolLM, Llama 3, Qwen): tokens, merges and the name of
  the pre-tokenizer that splits text as the original does;
- SentencePiece BPE (``llama`` in GGUF: Llama 2, Mistral, Gemma, Phi-3), which transformers holds
  as BPE with byte fallback: tokens with scores (llama.cpp merges the adjacent pair whose result
  scores highest), byte and control types, and whether a space is put before the text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agents.llm.pre_tokenizer import llama_cpp_pre_tokenizer, sentencepiece_space_prefix
from protocol import InvalidParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["MetadataValue", "padded_to", "tokenizer_metadata_from_hf"]

_PAD_SCORE = -1e9
"""Scores no merge competes with: for pieces nothing makes (characters, bytes, specials, padding)."""


@dataclass(frozen=True, slots=True)
class MetadataValue:
    """One GGUF key/value with its type (arrays name their element type)."""

    key: str
    value: Any
    type: Any
    sub_type: Any = None


def tokenizer_metadata_from_hf(tokenizer: PreTrainedTokenizerBase) -> list[MetadataValue]:
    """GGUF tokenizer metadata from a Hugging Face fast tokenizer.

    Raises:
        InvalidParams: not a fast BPE tokenizer, or one whose text splitting llama.cpp does not reproduce.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InvalidParams("only fast (tokenizers-backed) tokenizers can be exported to GGUF")
    spec = json.loads(backend.to_str())
    if spec["model"]["type"] != "BPE":
        raise InvalidParams(f"only BPE tokenizers can be exported to GGUF, not {spec['model']['type']}")
    vocab: dict[str, int] = tokenizer.get_vocab()
    tokens = [f"[PAD{i}]" for i in range(max(vocab.values()) + 1)]  # ids the tokenizer leaves unused
    for token, index in vocab.items():
        tokens[index] = token
    space_prefix = sentencepiece_space_prefix(spec)
    values = _byte_level(spec, tokens) if space_prefix is None else _sentencepiece(spec, tokens, space_prefix)
    return values + _special_ids_and_template(tokenizer)


def _types(
    spec: dict[str, Any], tokens: list[str], *, sentencepiece: bool = False, unknown: str | None = None
) -> list[int]:
    import gguf

    added = {t["content"]: t.get("special", False) for t in spec.get("added_tokens", [])}
    vocab = spec["model"].get("vocab", {})
    kinds = []
    for token in tokens:
        if token not in vocab and token not in added:
            kinds.append(gguf.TokenType.UNUSED)  # an id the tokenizer leaves unused: [PADn]
        elif token == unknown:
            kinds.append(gguf.TokenType.UNKNOWN)
        elif added.get(token):
            kinds.append(gguf.TokenType.CONTROL)
        elif token in added:
            kinds.append(gguf.TokenType.USER_DEFINED)
        elif sentencepiece and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            kinds.append(gguf.TokenType.BYTE)  # SentencePiece's byte fallback pieces, <0x00>..<0xFF>
        else:
            kinds.append(gguf.TokenType.NORMAL)
    return [int(k) for k in kinds]


def _merges(spec: dict[str, Any]) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]


def _byte_level(spec: dict[str, Any], tokens: list[str]) -> list[MetadataValue]:
    import gguf

    return [
        MetadataValue("tokenizer.ggml.model", "gpt2", gguf.GGUFValueType.STRING),
        MetadataValue("tokenizer.ggml.pre", llama_cpp_pre_tokenizer(spec), gguf.GGUFValueType.STRING),
        MetadataValue("tokenizer.ggml.tokens", tokens, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING),
        MetadataValue(
            "tokenizer.ggml.token_type", _types(spec, tokens), gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32
        ),
        MetadataValue("tokenizer.ggml.merges", _merges(spec), gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING),
    ]


def _sentencepiece(spec: dict[str, Any], tokens: list[str], space_prefix: bool) -> list[MetadataValue]:
    """The ``llama`` vocabulary: each piece scored by when BPE training made it (earlier is higher).

    transformers orders a SentencePiece model's merges by the score of the piece each makes, so a
    merge's rank gives back that order; pieces no merge makes (characters, bytes, specials) are
    never the result of one and keep a score that no merge competes with.
    """
    import gguf

    index = {token: i for i, token in enumerate(tokens)}
    scores = [_PAD_SCORE] * len(tokens)
    for rank, merge in enumerate(_merges(spec)):
        made = index.get(merge.replace(" ", "", 1))
        if made is not None and scores[made] == _PAD_SCORE:
            scores[made] = -float(rank)
    return [
        MetadataValue("tokenizer.ggml.model", "llama", gguf.GGUFValueType.STRING),
        MetadataValue("tokenizer.ggml.tokens", tokens, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING),
        MetadataValue("tokenizer.ggml.scores", scores, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32),
        MetadataValue(
            "tokenizer.ggml.token_type",
            _types(spec, tokens, sentencepiece=True, unknown=spec["model"].get("unk_token")),
            gguf.GGUFValueType.ARRAY,
            gguf.GGUFValueType.INT32,
        ),
        MetadataValue("tokenizer.ggml.add_space_prefix", space_prefix, gguf.GGUFValueType.BOOL),
    ]


def _special_ids_and_template(tokenizer: PreTrainedTokenizerBase) -> list[MetadataValue]:
    import gguf

    # Whether a BOS starts every text, as the tokenizer's post-processor does it (Llama 2/3, Mistral
    # and Gemma do; SmolLM and Qwen do not): llama.cpp's own default differs by vocabulary type.
    bos = getattr(tokenizer, "bos_token_id", None)
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    values = [MetadataValue("tokenizer.ggml.add_bos_token", adds_bos, gguf.GGUFValueType.BOOL)]
    for role in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{role}_token_id", None)
        if token_id is not None:
            values.append(MetadataValue(f"tokenizer.ggml.{role}_token_id", int(token_id), gguf.GGUFValueType.UINT32))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        values.append(MetadataValue("tokenizer.chat_template", template, gguf.GGUFValueType.STRING))
    return values


def padded_to(values: list[MetadataValue], vocab_size: int) -> list[MetadataValue]:
    """The tokenizer's arrays padded with unused ``[PADn]`` tokens to the model's vocabulary size.

    Models round their embedding up (Qwen2.5: 151,665 tokens, 151,936 rows; Phi-3: 32,011 and
    32,064); llama.cpp sizes the embedding by the token count and refuses a mismatch.
    """
    import gguf

    tokens = next((v.value for v in values if v.key == "tokenizer.ggml.tokens"), None)
    missing = vocab_size - len(tokens) if tokens is not None else 0
    if missing <= 0:
        return values
    fill: dict[str, list[Any]] = {
        "tokenizer.ggml.tokens": [f"[PAD{i}]" for i in range(len(tokens), vocab_size)],  # type: ignore[arg-type]
        "tokenizer.ggml.token_type": [int(gguf.TokenType.UNUSED)] * missing,
        "tokenizer.ggml.scores": [_PAD_SCORE] * missing,
    }
    return [replace(v, value=list(v.value) + fill[v.key]) if v.key in fill else v for v in values]
