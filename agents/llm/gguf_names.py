"""How Hugging Face llama weights map onto llama.cpp's GGUF tensors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocol import InvalidParams

__all__ = ["gguf_tensor_name", "module_of_lora_key", "permute_rows_for_rope"]


def gguf_tensor_name(hf_name: str, n_blocks: int) -> str:
    """``model.layers.3.self_attn.q_proj.weight`` → ``blk.3.attn_q.weight`` (gguf's own name map)."""
    import gguf

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    mapped = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise InvalidParams(f"no GGUF tensor for {hf_name}")
    return mapped


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


def permute_rows_for_rope(rows: npt.NDArray[np.float32], n_head: int) -> npt.NDArray[np.float32]:
    """Reorder the output rows of a q/k projection from Hugging Face's rotary layout to llama.cpp's.

    Hugging Face rotates the two halves of each head; llama.cpp (like the original LLaMA code)
    rotates interleaved pairs, so GGUF converters reorder q and k rows per head. A LoRA ``B``
    matrix produces rows of the same projection, so it gets the same reordering.
    """
    out = rows.shape[0]
    if out % (2 * n_head):
        raise InvalidParams(f"cannot split {out} rows into {n_head} rotary heads")
    return rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
