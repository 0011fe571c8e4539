"""The LoRA adapter as one self-describing safetensors file.

Tensors use peft's state-dict names (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``);
the header metadata carries the peft ``LoraConfig`` and the base model's identity, so a single
artifact reference is enough to rebuild the adapted model anywhere. safetensors only: no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import InvalidParams
from runtime import atomic_write

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel

__all__ = ["AdapterFile", "apply_adapter", "read_adapter", "write_adapter"]

_FORMAT = "meetara-lora-1"


@dataclass(frozen=True, slots=True)
class AdapterFile:
    """A LoRA adapter read from disk."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]
    base_model: str

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def alpha(self) -> float:
        return float(self.config["lora_alpha"])

    @property
    def target_modules(self) -> list[str]:
        """Names of the adapted module kinds (``q_proj``…), read from the tensors themselves."""
        names = {key.split(".lora_")[0].rsplit(".", 1)[-1] for key in self.tensors if ".lora_" in key}
        return sorted(names)


def _config_dict(model: PeftModel) -> dict[str, Any]:
    config = model.peft_config["default"].to_dict()
    # Sets are not JSON; peft accepts lists back.
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def write_adapter(model: PeftModel, path: Path, *, base_model: str) -> None:
    """Save the adapter weights of ``model`` (in float32) atomically."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").float().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    metadata = {"format": _FORMAT, "lora_config": json.dumps(_config_dict(model)), "base_model": base_model}
    with atomic_write(path, binary=True) as f:
        f.write(save(state, metadata=metadata))


def read_adapter(path: Path) -> AdapterFile:
    """Read an adapter written by :func:`write_adapter`.

    Raises:
        InvalidParams: not a safetensors file, or not an adapter of this format.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise InvalidParams(f"{path.name} is not a MeeTARA LoRA adapter file")
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError) as exc:
        raise InvalidParams(f"cannot read adapter {path.name}: {exc}") from exc
    return AdapterFile(tensors=tensors, config=json.loads(metadata["lora_config"]), base_model=metadata["base_model"])


def apply_adapter(model: PreTrainedModel, adapter: AdapterFile, *, trainable: bool = False) -> PeftModel:
    """Wrap ``model`` with the adapter's LoRA layers and load its weights."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    config = LoraConfig(**{k: v for k, v in adapter.config.items() if k in LoraConfig.__dataclass_fields__})
    config.inference_mode = not trainable
    peft_model = get_peft_model(model, config)
    result = set_peft_model_state_dict(peft_model, adapter.tensors)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise InvalidParams(f"adapter tensors do not match the base model: {missing[:3]}")
    return peft_model
