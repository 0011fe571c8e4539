"""A Hugging Face model (base or merged) of a supported architecture → a full GGUF file that llama.cpp runs.

The tokenizer travels as GGUF metadata: copied verbatim from the base GGUF when there is one
(so the merged model tokenizes exactly like its base), or built from a Hugging Face tokenizer
(``tokenizer_gguf``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from agents.llm.architectures import architecture_of
from agents.llm.tokenizer_gguf import MetadataValue, padded_to
from protocol import InvalidParams
from runtime import atomic_path

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

__all__ = ["MetadataValue", "tokenizer_metadata_from_gguf", "write_model_gguf"]

ModelDType = Literal["F16", "F32"]


def tokenizer_metadata_from_gguf(path: Path) -> list[MetadataValue]:
    """Every ``tokenizer.*`` key of a GGUF file, with its type."""
    from agents.llm.gguf_fields import read_gguf

    values = [field for field in read_gguf(path).fields.values() if field.key.startswith("tokenizer.")]
    if not any(v.key == "tokenizer.ggml.tokens" for v in values):
        raise InvalidParams(f"{path.name} carries no tokenizer")
    return values


def write_model_gguf(
    state: dict[str, torch.Tensor],
    config: PretrainedConfig,
    tokenizer: list[MetadataValue],
    path: Path,
    *,
    name: str,
    dtype: ModelDType = "F16",
) -> None:
    """Write a model's weights (Hugging Face names) as a GGUF file of its architecture, atomically.

    Matrices are stored in ``dtype``; norms and other vectors stay F32 as llama.cpp expects.

    Raises:
        UnsupportedArchitecture: the config's ``model_type`` has no row in the architecture table.
    """
    import gguf

    arch = architecture_of(config)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if dtype == "F16" else gguf.LlamaFileType.ALL_F32
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch=arch.gguf_name)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        writer.add_file_type(int(file_type))
        writer.add_vocab_size(int(config.vocab_size))
        arch.write_metadata(writer, config)
        for value in padded_to(tokenizer, int(config.vocab_size)):
            writer.add_key_value(value.key, value.value, value.type, sub_type=value.sub_type)
        for gguf_name, data in arch.model_tensors(
            state, lambda name: state[name].detach().to("cpu").float().numpy(), config
        ):
            as_f16 = dtype == "F16" and data.ndim == 2
            writer.add_tensor(
                gguf_name,
                np.ascontiguousarray(data.astype(np.float16 if as_f16 else np.float32)),
                raw_dtype=gguf.GGMLQuantizationType.F16 if as_f16 else gguf.GGMLQuantizationType.F32,
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
