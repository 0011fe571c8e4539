"""Domain relevance: cosine similarity of a conversation to the domain description.

Embeddings come from all-MiniLM-L6-v2 (``agents.llm.embeddings``).
"""

from __future__ import annotations

import itertools

import numpy as np

from agents.llm.embeddings import Embedder, default_embedder
from runtime import Catalog

__all__ = ["DomainReferences", "Embedder", "default_embedder"]


class DomainReferences:
    """One reference vector per domain, to rank a conversation among all domains.

    A domain's vector is the normalised mean of its description and of each subject in its
    scope: short phrases embed closer to real questions than one long list does.
    """

    def __init__(self, embedder: Embedder, domains: dict[str, tuple[str, list[str]]]) -> None:
        self.names = list(domains)
        texts: list[str] = []
        bounds = [0]
        for name, (description, subjects) in domains.items():
            label = name.replace("_", " ")
            texts += [description, *(f"{label}: {s}" for s in subjects)]
            bounds.append(len(texts))
        vectors = embedder.encode(texts)  # one call: full batches, not one small batch per domain
        means = np.stack([vectors[start:end].mean(axis=0) for start, end in itertools.pairwise(bounds)])
        self.vectors = means / np.linalg.norm(means, axis=1, keepdims=True)
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
