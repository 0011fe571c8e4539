"""How much memory a LoRA or QLoRA run needs, from the base's shape and the plan's batch.

What the backward pass keeps per token and decoder layer (LoRA on every linear layer, the base
frozen, SDPA attention, no gradient checkpointing), in elements:
- the residual stream into each of the two norms and the two normed outputs (the inputs of the
  q/k/v and gate/up LoRA layers): 4 x hidden;
- q and the attention output (also the o-projection's input): 2 x hidden; k and v: 2 x kv width;
- the MLP's gate and up outputs, the activated gate, and their product (the down LoRA's input):
  4 x intermediate.
The output head's logits are upcast to fp32 and held with their log-softmax and two gradients:
4 x vocabulary x 4 bytes per token. `tests/models/test_memory.py` checks both terms against the
measured peak of real training steps on CPU.
"""

from __future__ import annotations

from typing import Literal

from agents.llm.base_model import BaseModelSource, gguf_header
from protocol.agents.gpu_optimization import MemoryEstimate, ModelShape

__all__ = ["BaseFormat", "estimate_training_memory", "shape_of_base", "shape_of_config"]

BaseFormat = Literal["fp32", "bf16", "nf4"]

GB = 2**30
_BYTES_PER_WEIGHT: dict[BaseFormat, float] = {"fp32": 4.0, "bf16": 2.0, "nf4": 0.5 + 4 / 64 / 4}
"""nf4: 4 bits per weight plus one scale per 64-weight block (double-quantized to 8 bits)."""
_LORA_BYTES_PER_PARAMETER = 16
"""fp32 weight, gradient and AdamW's two moments."""
_LOGIT_COPIES = 4
_CUDA_OVERHEAD_GB = 1.0
"""CUDA context and kernels (~0.5 GB) plus allocator fragmentation."""


def shape_of_config(config: object) -> ModelShape:
    """The shape of a transformers config."""
    heads = int(config.num_attention_heads)  # type: ignore[attr-defined]
    return ModelShape(
        hidden=int(config.hidden_size),  # type: ignore[attr-defined]
        layers=int(config.num_hidden_layers),  # type: ignore[attr-defined]
        intermediate=int(config.intermediate_size),  # type: ignore[attr-defined]
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=getattr(config, "head_dim", None),
        vocab=int(config.vocab_size),  # type: ignore[attr-defined]
        tied=bool(getattr(config, "tie_word_embeddings", False)),
    )


def shape_of_base(base: BaseModelSource) -> ModelShape | None:
    """The base's shape from its GGUF header or its config alone; None where they do not say."""
    if base.gguf_path is not None:
        header = gguf_header(base.gguf_path)
        hidden, layers, intermediate, heads = (
            header.shape_value(key)
            for key in ("embedding_length", "block_count", "feed_forward_length", "attention.head_count")
        )
        if hidden is None or layers is None or intermediate is None or heads is None:
            return None
        return ModelShape(
            hidden=hidden,
            layers=layers,
            intermediate=intermediate,
            heads=heads,
            kv_heads=header.shape_value("attention.head_count_kv") or heads,
            head_dim=header.shape_value("attention.key_length"),
            vocab=header.shape_value("vocab_size") or header.vocab,
            tied=not header.has_output,
        )
    from transformers import AutoConfig

    return shape_of_config(AutoConfig.from_pretrained(base.location, local_files_only=True, trust_remote_code=False))


def estimate_training_memory(
    shape: ModelShape,
    *,
    base_format: BaseFormat,
    lora_r: int,
    micro_batch: int,
    sequence_length: int,
    cuda: bool,
) -> MemoryEstimate:
    """Peak memory of a training step: weights, LoRA states, saved activations, logits, overhead."""
    activation_bytes = 4 if base_format == "fp32" else 2  # bf16 / fp16 autocast, also over a 4-bit base
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    linear = shape.parameters - embeddings
    if base_format == "nf4":
        # bitsandbytes quantizes the decoder's linear layers; embeddings, head and norms stay 16-bit.
        weights = linear * _BYTES_PER_WEIGHT["nf4"] + embeddings * 2
    else:
        weights = shape.parameters * _BYTES_PER_WEIGHT[base_format]
    lora_parameters = shape.layers * lora_r * sum(a + b for a, b in shape.linear_shapes())
    tokens = micro_batch * sequence_length
    kv_width = shape.kv_heads * shape.head_width
    per_token_layer = 4 * shape.hidden + 2 * shape.heads * shape.head_width + 2 * kv_width + 4 * shape.intermediate
    activations = tokens * shape.layers * per_token_layer * activation_bytes
    logits = tokens * shape.vocab * 4 * _LOGIT_COPIES
    overhead = _CUDA_OVERHEAD_GB * GB if cuda else 0.0
    parts = [weights, lora_parameters * _LORA_BYTES_PER_PARAMETER, activations, logits, overhead]
    return MemoryEstimate(
        base_format=base_format,
        weights_gb=round(parts[0] / GB, 3),
        lora_gb=round(parts[1] / GB, 3),
        activations_gb=round(parts[2] / GB, 3),
        logits_gb=round(parts[3] / GB, 3),
        overhead_gb=round(parts[4] / GB, 3),
        total_gb=round(sum(parts) / GB, 3),
    )
