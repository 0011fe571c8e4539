"""Next-token logits of the same tokens from transformers (+ peft) and from llama.cpp, and how close they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def llama_logits(model: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=256, logits_all=True, verbose=False)
    llm.eval(ids)
    return np.asarray(llm.scores[: len(ids)], dtype=np.float64)


def torch_logits(model, ids: list[int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(torch.tensor([ids]), use_cache=False).logits[0].double().numpy()  # type: ignore[no-any-return]


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Share of positions with the same top-1 token, and the correlation of all logits."""
    return float((a.argmax(-1) == b.argmax(-1)).mean()), float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute logit difference, relative to the reference's spread of logits (max - min)."""
    return float(np.abs(a - b).max() / (a.max() - a.min()))
