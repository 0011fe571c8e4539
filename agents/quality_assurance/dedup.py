"""Exact (normalised hash) and near (MinHash LSH over word 3-grams) duplicate detection."""

from __future__ import annotations

import hashlib

import numpy as np
from datasketch import MinHash, MinHashLSH

from agents.text.ngrams import normalise, word_ngrams

__all__ = ["Deduplicator"]


class Deduplicator:
    """Remembers kept texts; says whether a new one repeats (exactly or nearly) a kept one."""

    def __init__(self, *, threshold: float, permutations: int) -> None:
        self._threshold = threshold
        self._permutations = permutations
        self._exact: set[bytes] = set()
        self._lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
        self._signatures: dict[str, np.ndarray] = {}

    def _minhash(self, text: str) -> MinHash:
        mh = MinHash(num_perm=self._permutations, seed=1)
        mh.update_batch(word_ngrams(text, 3))
        return mh

    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.blake2b(normalise(text).encode(), digest_size=16).digest()

    def exact_duplicate(self, text: str) -> bool:
        return self._digest(text) in self._exact

    def near_duplicate_of(self, text: str) -> tuple[str, float] | None:
        """The kept sample this text nearly repeats, with the estimated Jaccard similarity."""
        mh = self._minhash(text)
        best: tuple[str, float] | None = None
        for key in self._lsh.query(mh):
            similarity = float(np.mean(self._signatures[key] == mh.hashvalues))
            if similarity >= self._threshold and (best is None or similarity > best[1]):
                best = (key, similarity)
        return best

    def add(self, key: str, text: str) -> None:
        if key in self._signatures:
            return
        mh = self._minhash(text)
        self._exact.add(self._digest(text))
        self._lsh.insert(key, mh)
        self._signatures[key] = mh.hashvalues.copy()

    def __len__(self) -> int:
        return len(self._signatures)
