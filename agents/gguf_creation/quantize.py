"""Quantizing a GGUF with llama.cpp's own quantizer, through llama-cpp-python."""

from __future__ import annotations

import ctypes
from pathlib import Path

from protocol import InvalidParams
from runtime import atomic_path

__all__ = ["quantization_types", "quantize"]


def quantization_types() -> dict[str, int]:
    """llama.cpp's file types by name (``Q4_K_M`` → ``LLAMA_FTYPE_MOSTLY_Q4_K_M``)."""
    import llama_cpp

    types: dict[str, int] = {}
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            types[attr.removeprefix("LLAMA_FTYPE_MOSTLY_")] = int(getattr(llama_cpp, attr))
        elif attr == "LLAMA_FTYPE_ALL_F32":
            types["F32"] = int(getattr(llama_cpp, attr))
    return types


def quantize(source: Path, target: Path, quant: str, *, threads: int = 0) -> None:
    """Quantize ``source`` (an F16/F32 GGUF) to ``target`` as ``quant``, atomically.

    Tensors whose rows do not suit a k-quant are given a compatible type by llama.cpp itself.
    """
    import llama_cpp

    types = quantization_types()
    if quant not in types:
        raise InvalidParams(f"unknown quantization {quant!r}; llama.cpp offers {', '.join(sorted(types))}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = types[quant]
    params.nthread = threads
    with atomic_path(target) as tmp:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            raise InvalidParams(f"llama.cpp could not quantize {source.name} to {quant} (status {status})")
