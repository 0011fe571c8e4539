"""Building a job's GGUF files: adapter GGUF, merged F16, quantized model(s), metadata."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agents.gguf_creation.adapter_gguf import write_adapter_gguf
from agents.gguf_creation.quantize import quantize
from agents.llm.adapter_file import AdapterFile, apply_adapter
from agents.llm.base_model import BaseModelSource, file_sha256, load_base_model, load_tokenizer
from agents.llm.chat_template import with_default_system
from agents.llm.layout import ModelLayout
from agents.llm.model_gguf import MetadataValue, tokenizer_metadata_from_gguf, write_model_gguf
from agents.llm.tokenizer_gguf import tokenizer_metadata_from_hf
from protocol.agents.gguf_creation import CreateGgufInput, FileKind, GgufFile
from runtime import VERSION

__all__ = ["BuildPlan", "BuiltFiles", "build_files", "tool_name"]


@dataclass(frozen=True, slots=True)
class BuildPlan:
    request: CreateGgufInput
    base: BaseModelSource
    adapter: AdapterFile
    layouts: list[ModelLayout]
    build_root: Path
    """``{data}/models/builds``: each layout's files go to its folder under it."""
    work_dir: Path
    cache_dir: Path


@dataclass(frozen=True, slots=True)
class BuiltFiles:
    per_model: dict[str, list[GgufFile]]
    seconds: dict[str, float]
    base_sha256: str | None


def _describe(path: Path, kind: FileKind, quant: str) -> GgufFile:
    return GgufFile(
        kind=kind,
        path=str(path),
        quantization=quant,
        size=path.stat().st_size,
        sha256=file_sha256(path),
    )


def _tokenizer_metadata(plan: BuildPlan) -> list[MetadataValue]:
    if plan.base.gguf_path is not None:
        values = tokenizer_metadata_from_gguf(plan.base.gguf_path)
    else:
        values = tokenizer_metadata_from_hf(load_tokenizer(plan.base, plan.cache_dir))
    system = plan.request.system_prompt
    return [
        replace(v, value=with_default_system(v.value, system)) if v.key == "tokenizer.chat_template" else v
        for v in values
    ]


def build_files(plan: BuildPlan, progress: Any = None) -> BuiltFiles:
    """Write every file of the job's model(s); blocking, meant for a worker thread."""
    import torch

    request = plan.request
    seconds: dict[str, float] = {}
    per_model: dict[str, list[GgufFile]] = {layout.model_id: [] for layout in plan.layouts}
    full = next(layout for layout in plan.layouts if not layout.lite)

    started = time.monotonic()
    base_model = load_base_model(plan.base, plan.cache_dir, dtype=torch.float32)
    seconds["load_base"] = time.monotonic() - started

    started = time.monotonic()
    adapter_path = plan.build_root / full.folder / full.adapter_file(request.adapter_dtype)
    write_adapter_gguf(
        plan.adapter,
        adapter_path,
        config=base_model.config,
        dtype=request.adapter_dtype,
        name=f"{full.model_id} LoRA",
    )
    per_model[full.model_id].append(_describe(adapter_path, "adapter", request.adapter_dtype))
    seconds["adapter"] = time.monotonic() - started
    if progress is not None:
        progress("adapter GGUF written")

    if request.merge:
        started = time.monotonic()
        merged = apply_adapter(base_model, plan.adapter).merge_and_unload()
        f16 = plan.work_dir / f"{full.model_id}_f16.gguf"
        write_model_gguf(
            merged.state_dict(), merged.config, _tokenizer_metadata(plan), f16, name=full.model_id, dtype="F16"
        )
        del merged, base_model
        seconds["merge"] = time.monotonic() - started
        if progress is not None:
            progress("merged F16 GGUF written")
        started = time.monotonic()
        for layout in plan.layouts:
            quant = request.lite_quantization if layout.lite else request.quantization
            target = plan.build_root / layout.folder / layout.model_file(quant)
            quantize(f16, target, quant)
            per_model[layout.model_id].append(_describe(target, "merged", quant))
        seconds["quantize"] = time.monotonic() - started
        if request.keep_f16:
            per_model[full.model_id].append(_describe(f16, "merged_f16", "F16"))
        else:
            f16.unlink(missing_ok=True)
    base_sha = plan.base.identity() if plan.base.kind == "gguf" else None
    return BuiltFiles(per_model=per_model, seconds={k: round(v, 3) for k, v in seconds.items()}, base_sha256=base_sha)


def tool_name() -> str:
    return f"meetara-lab {VERSION}"
