"""LoRA adapter → llama.cpp's adapter GGUF (``general.type = adapter``, ``adapter.type = lora``).

llama.cpp applies ``W + scale * B*A`` with ``scale = alpha / rank`` per tensor pair
``blk.N.<tensor>.weight.lora_a`` (shape rank x in) and ``.lora_b`` (out x rank), checking that
``lora_a`` matches the base tensor's input width and ``lora_b`` its output height.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from agents.llm.adapter_file import AdapterFile
from agents.llm.architectures import architecture_of, module_of_lora_key, permute_rows_for_rope
from protocol import InvalidParams
from runtime import atomic_path

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["AdapterDType", "write_adapter_gguf"]

AdapterDType = Literal["F16", "F32", "Q8_0"]


def _encode(data: np.ndarray, dtype: AdapterDType) -> tuple[np.ndarray, object]:
    import gguf

    if dtype == "F32":
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if dtype == "Q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0), (
            gguf.GGMLQuantizationType.Q8_0
        )
    # F16, and Q8_0 rows too short to quantize (lora_b rows are only `rank` wide).
    return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def write_adapter_gguf(
    adapter: AdapterFile, path: Path, *, config: PretrainedConfig, dtype: AdapterDType = "F16", name: str
) -> int:
    """Write the adapter GGUF for a base model of ``config``'s architecture, atomically.

    Returns the number of LoRA tensor pairs. llama.cpp refuses an adapter whose architecture is not
    its model's, so the file carries the base's GGUF architecture name.
    """
    import gguf

    arch = architecture_of(config)

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in adapter.tensors.items():
        module, which = module_of_lora_key(key)
        pairs.setdefault(module, {})[which] = tensor.float().numpy()
    if not pairs:
        raise InvalidParams("the adapter has no LoRA tensors")
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch=arch.gguf_name)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(name)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter.alpha)
        for module in sorted(pairs):
            pair = pairs[module]
            if set(pair) != {"a", "b"}:
                raise InvalidParams(f"LoRA tensors of {module} are incomplete")
            a, b = pair["a"], pair["b"]
            heads = arch.rope_heads(module, config)
            if heads is not None:
                b = permute_rows_for_rope(b, heads)
            base = arch.tensor_name(f"{module}.weight", int(config.num_hidden_layers))
            for suffix, data in (("lora_a", a), ("lora_b", b)):
                encoded, qtype = _encode(np.ascontiguousarray(data), dtype)
                writer.add_tensor(f"{base}.{suffix}", encoded, raw_dtype=qtype)  # type: ignore[arg-type]
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return len(pairs)
