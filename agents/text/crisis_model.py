"""The crisis classifier: all-MiniLM-L6-v2 fine-tuned with LoRA, a linear head on its sentence vector.

A frozen sentence embedding holds what a message is about, not when or from where: "I took 30
pills an hour ago" and "I took 30 pills in my twenties" sit side by side, and so do a crisis and a
student's essay question about one. Fine-tuning the encoder's attention lets it read tense, stance
and distance. The adapter (``configs/safety/crisis_model/``, ~1 MB) is trained by
``python -m agents.text.crisis_training`` from the hand-labelled sets; ``meta.json`` records the
digest of what it was trained on, the crisis threshold and the label order.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CrisisModel", "ModelMeta", "merge_lora", "model_dir", "read_meta", "training_digest", "write_meta"]

HEAD_FILE = "head.safetensors"
META_FILE = "meta.json"
ADAPTER_DIR = "adapter"


class ModelMeta(BaseModel):
    """``meta.json`` beside the adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    labels: list[str]
    """Output columns; the first is ``none``."""
    threshold: float = Field(gt=0, lt=1)
    """P(crisis) = 1 - P(none) at or above this is a crisis (set on the calibration split)."""
    scale: float = Field(gt=0)
    """Logits are ``scale * head(unit sentence vector)``."""
    max_tokens: int = Field(ge=16)
    training_digest: str
    """``training_digest()`` of the files it was trained on."""
    trained_on: int
    """Messages trained on (calibration split excluded)."""
    calibration: dict[str, float]
    """Figures on the calibration split the threshold was set on."""


def model_dir(directory: Path | None = None) -> Path:
    """``<configs>/safety/crisis_model``: the configured one when it exists, else the shipped one."""
    if directory is not None and (directory / "safety" / "crisis_model" / META_FILE).is_file():
        return directory / "safety" / "crisis_model"
    return Path(str(importlib.resources.files("configs").joinpath("safety", "crisis_model")))


def training_digest(files: Sequence[Path], settings: BaseModel) -> str:
    """What identifies a trained classifier: the labelled files' bytes and the training settings.

    The domains' everyday situations (the material) are trained on as well but left out: they are
    extra non-crises that change with every material edit, and a classifier trained on an older
    snapshot of them is still the one its figures were measured for.
    """
    digest = hashlib.sha256(settings.model_dump_json().encode())
    for path in files:
        digest.update(f"{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class SentenceClassifier:
    """Mean-pooled, L2-normalised encoder states through a linear head (the training and serving network)."""

    def __init__(self, encoder: Any, head: Any, scale: float) -> None:
        self.encoder, self.head, self.scale = encoder, head, scale

    def logits(self, batch: dict[str, Any]) -> Any:
        import torch

        states = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return self.scale * self.head(torch.nn.functional.normalize(mean, dim=1))


class CrisisModel:
    """The shipped classifier, merged into the encoder for serving."""

    def __init__(self, path: Path, base_model: str, *, batch_size: int = 64) -> None:
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        self.meta = ModelMeta.model_validate_json((path / META_FILE).read_text(encoding="utf-8"))
        self._tokenizer: Any = AutoTokenizer.from_pretrained(base_model, local_files_only=True)
        encoder = AutoModel.from_pretrained(base_model, local_files_only=True, use_safetensors=True)
        merge_lora(encoder, path / ADAPTER_DIR)
        encoder.eval()
        weights = load_file(str(path / HEAD_FILE))
        head = torch.nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
        head.load_state_dict(weights)
        if head.out_features != len(self.meta.labels):
            raise ValueError(f"{path}: the head has {head.out_features} outputs for {len(self.meta.labels)} labels")
        self._net = SentenceClassifier(encoder, head.eval(), self.meta.scale)
        self._batch_size = batch_size

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """One row of label probabilities per text, columns in ``meta.labels`` order."""
        import torch

        out = np.zeros((len(texts), len(self.meta.labels)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths pad little
        with torch.inference_mode():
            for start in range(0, len(order), self._batch_size):
                rows = order[start : start + self._batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.meta.max_tokens,
                    return_tensors="pt",
                )
                out[rows] = torch.softmax(self._net.logits(batch), dim=1).float().numpy()
        return out


def merge_lora(model: Any, adapter: Path) -> None:
    """Add a peft LoRA adapter (``save_pretrained``'s files) into ``model``'s weights: W += (alpha/r) B A.

    What ``PeftModel.merge_and_unload`` does for plain LoRA on linear layers, without importing
    peft, which pulls in its training stack and adds seconds to every agent process's start.
    """
    import torch
    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    unsupported = {k for k in ("use_rslora", "use_dora", "fan_in_fan_out") if config.get(k)}
    if config.get("peft_type") != "LORA" or unsupported:
        raise ValueError(
            f"{adapter}: only plain LoRA adapters are served (found {config.get('peft_type')}, {unsupported})"
        )
    scaling = config["lora_alpha"] / config["r"]
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    prefix = "base_model.model."
    pairs = {key[len(prefix) : -len(".lora_A.weight")] for key in tensors if key.endswith(".lora_A.weight")}
    if not pairs or len(tensors) != 2 * len(pairs):
        raise ValueError(f"{adapter}: expected lora_A/lora_B pairs only, found {sorted(tensors)[:4]}")
    with torch.no_grad():
        for name in sorted(pairs):
            down = tensors[f"{prefix}{name}.lora_A.weight"]
            up = tensors[f"{prefix}{name}.lora_B.weight"]
            layer = model.get_submodule(name)
            layer.weight += scaling * (up @ down).to(layer.weight.dtype)


def read_meta(path: Path) -> ModelMeta:
    return ModelMeta.model_validate_json((path / META_FILE).read_text(encoding="utf-8"))


def write_meta(path: Path, meta: ModelMeta) -> None:
    from runtime import atomic_write

    with atomic_write(path / META_FILE) as f:
        f.write(json.dumps(meta.model_dump(), indent=2) + "\n")
