"""The base-model architectures a job can build from, and what each needs on its way to llama.cpp.

One row per transformers ``model_type``. llama.cpp's own converter (``convert_hf_to_gguf.py``) is
the reference for each row's transforms; the architecture tests prove every row against
transformers + peft through llama.cpp itself:

- llama-style rotary (llama, mistral): Hugging Face rotates the two halves of each head, llama.cpp
  interleaved pairs, so q/k rows (weights, biases, LoRA ``B``) are reordered per head. The others
  run as NEOX rotary in llama.cpp and keep Hugging Face's order.
- gemma2: RMSNorm applies ``x * (1 + w)``; llama.cpp multiplies by the stored weight, so norms are
  written as ``w + 1``. Attention and final logits are soft-capped; the embedding is tied.
- phi3: q/k/v and gate/up come fused (``qkv_proj``, ``gate_up_proj``) and stay fused in GGUF.
- llama 3.x: "llama3" rope scaling becomes a ``rope_freqs`` tensor of per-frequency factors.
- Tied embeddings: no separate output tensor; llama.cpp reuses ``token_embd``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from protocol import InvalidParams

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "UnsupportedArchitecture",
    "architecture_of",
    "module_of_lora_key",
    "permute_rows_for_rope",
    "supported_model_types",
]

Matrix = npt.NDArray[np.float32]


class UnsupportedArchitecture(InvalidParams):
    """The base model's architecture has no row in the table: refused before any training."""


def permute_rows_for_rope(rows: Matrix, n_head: int) -> Matrix:
    """Reorder the output rows of a q/k projection from Hugging Face's rotary layout to llama.cpp's.

    Per head, Hugging Face rotates dimension ``i`` with ``i + d/2``; llama.cpp's llama graph (like
    the original LLaMA code) rotates ``2i`` with ``2i + 1``. A bias or a LoRA ``B`` matrix produces
    rows of the same projection, so it gets the same reordering.
    """
    out = rows.shape[0]
    if out % (2 * n_head):
        raise InvalidParams(f"cannot split {out} rows into {n_head} rotary heads")
    return rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def module_of_lora_key(key: str) -> tuple[str, str]:
    """The module a peft LoRA weight belongs to, and which matrix it is.

    ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``
    → (``model.layers.0.self_attn.q_proj``, ``a``).
    """
    prefix = "base_model.model."
    body = key[len(prefix) :] if key.startswith(prefix) else key
    for part, which in ((".lora_A.weight", "a"), (".lora_B.weight", "b")):
        if body.endswith(part):
            return body[: -len(part)], which
    raise InvalidParams(f"not a LoRA weight: {key}")


def _rope(config: PretrainedConfig) -> dict[str, Any]:
    """Rope settings, from transformers 5's ``rope_parameters`` or the older top-level fields."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if "rope_theta" not in params:
        params["rope_theta"] = getattr(config, "rope_theta", 10000.0)
    return params


def head_dim(config: PretrainedConfig) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _llama3_rope_factors(config: PretrainedConfig) -> Matrix | None:
    """Llama 3.x's frequency-dependent rope scaling as llama.cpp's ``rope_freqs`` factors (None without it)."""
    rope = _rope(config)
    if rope.get("rope_type", rope.get("type")) != "llama3":
        return None
    dim = head_dim(config)
    factor = float(rope["factor"])
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    context = float(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (float(rope["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    wavelengths = 2 * math.pi / freqs
    smooth = (context / wavelengths - low) / (high - low)
    # Short wavelengths keep their frequency, long ones are divided by `factor`, the band between blends.
    factors = np.where(
        wavelengths < context / high,
        1.0,
        np.where(wavelengths > context / low, factor, 1.0 / ((1 - smooth) / factor + smooth)),
    )
    return factors.astype(np.float32)


def _gemma2_metadata(writer: Any, config: PretrainedConfig) -> None:
    if getattr(config, "attn_logit_softcapping", None):
        writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping))
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    writer.add_sliding_window(int(config.sliding_window))


def _phi3_metadata(writer: Any, config: PretrainedConfig) -> None:
    writer.add_rope_scaling_orig_ctx_len(
        int(getattr(config, "original_max_position_embeddings", None) or config.max_position_embeddings)
    )
    writer.add_sliding_window(int(getattr(config, "sliding_window", None) or 0))


def _check_phi3(config: PretrainedConfig) -> None:
    if _rope(config).get("rope_type", "default") not in ("default", None):
        raise UnsupportedArchitecture(
            "phi3 with long-context rope scaling (longrope / su) is not supported yet; use a 4k-context Phi-3 base"
        )


def _check_gemma2(config: PretrainedConfig) -> None:
    # llama.cpp scales queries by 1/sqrt(head_dim) except for the 46-layer (27B) model, which it knows.
    scalar = getattr(config, "query_pre_attn_scalar", None)
    if scalar is not None and scalar != head_dim(config) and config.num_hidden_layers != 46:
        raise UnsupportedArchitecture(
            f"gemma2 with query_pre_attn_scalar {scalar} != head_dim {head_dim(config)} does not run in llama.cpp"
        )


@dataclass(frozen=True, slots=True)
class Architecture:
    """One base-model architecture: its llama.cpp name and the transforms its tensors need."""

    model_type: str
    gguf_arch: str
    """Member of ``gguf.MODEL_ARCH``: the architecture llama.cpp runs the model as."""
    permute_qk: bool = False
    """llama-style rotary: q/k rows reordered per head (see :func:`permute_rows_for_rope`)."""
    norm_offset: float = 0.0
    """Added to every norm weight (gemma's ``1 + w`` RMSNorm)."""
    extra_metadata: Callable[[Any, PretrainedConfig], None] | None = None
    check: Callable[[PretrainedConfig], None] | None = None
    """Refuses variants of the architecture that llama.cpp (or this converter) cannot run."""

    @property
    def gguf_name(self) -> str:
        import gguf

        return gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, self.gguf_arch)]

    def tensor_name(self, hf_name: str, n_blocks: int) -> str:
        """``model.layers.3.self_attn.q_proj.weight`` → ``blk.3.attn_q.weight`` (gguf's own name map)."""
        import gguf

        name_map = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, self.gguf_arch), n_blocks)
        mapped = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise InvalidParams(f"no {self.model_type} GGUF tensor for {hf_name}")
        return mapped

    def rope_heads(self, module: str, config: PretrainedConfig) -> int | None:
        """Heads whose rows are reordered for the projection ``module`` (None: left as it is)."""
        if not self.permute_qk:
            return None
        if module.endswith("self_attn.q_proj"):
            return int(config.num_attention_heads)
        if module.endswith("self_attn.k_proj"):
            return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        return None

    def model_tensors(
        self, names: Iterable[str], load: Callable[[str], Matrix], config: PretrainedConfig
    ) -> Iterator[tuple[str, Matrix]]:
        """The GGUF tensors of a full model: Hugging Face tensor ``names``, each read as float32 by ``load``."""
        tied = bool(getattr(config, "tie_word_embeddings", False))
        n_blocks = int(config.num_hidden_layers)
        factors = _llama3_rope_factors(config)
        if factors is not None:
            yield "rope_freqs.weight", factors
        for hf_name in sorted(names):
            if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                continue
            data = load(hf_name)
            module = hf_name.rsplit(".", 1)[0]
            heads = self.rope_heads(module, config)
            if heads is not None:
                data = permute_rows_for_rope(data, heads)
            if self.norm_offset and hf_name.endswith("norm.weight"):
                data = data + np.float32(self.norm_offset)
            yield self.tensor_name(hf_name, n_blocks), data

    def write_metadata(self, writer: Any, config: PretrainedConfig) -> None:
        """The hyperparameters llama.cpp reads for this architecture (keys prefixed by the writer)."""
        dim = head_dim(config)
        rope = _rope(config)
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(int(config.num_hidden_layers))
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(int(config.num_attention_heads))
        writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
        writer.add_key_length(dim)
        writer.add_value_length(dim)
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_rope_dimension_count(int(dim * float(rope.get("partial_rotary_factor", 1.0))))
        writer.add_rope_freq_base(float(rope["rope_theta"]))
        if self.extra_metadata is not None:
            self.extra_metadata(writer, config)


ARCHITECTURES: dict[str, Architecture] = {
    arch.model_type: arch
    for arch in (
        Architecture("llama", "LLAMA", permute_qk=True),
        # llama.cpp runs Mistral as llama (its converter registers MistralForCausalLM there).
        Architecture("mistral", "LLAMA", permute_qk=True),
        Architecture("qwen2", "QWEN2"),
        Architecture("qwen3", "QWEN3"),
        Architecture("gemma2", "GEMMA2", norm_offset=1.0, extra_metadata=_gemma2_metadata, check=_check_gemma2),
        Architecture("phi3", "PHI3", extra_metadata=_phi3_metadata, check=_check_phi3),
    )
}


def supported_model_types() -> list[str]:
    return sorted(ARCHITECTURES)


def architecture_of(config: PretrainedConfig | str) -> Architecture:
    """The table's row for a model config (or a ``model_type``); refuses what the table lacks."""
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    arch = ARCHITECTURES.get(str(model_type))
    if arch is None:
        raise UnsupportedArchitecture(
            f"base model architecture {model_type!r} is not supported; supported: {', '.join(supported_model_types())}"
        )
    if arch.check is not None and not isinstance(config, str):
        arch.check(config)
    return arch
