"""Text normalisation and word n-grams, shared by dataset statistics and duplicate detection."""

from __future__ import annotations

import re

__all__ = ["normalise", "word_ngrams"]

_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def word_ngrams(text: str, n: int) -> list[bytes]:
    """Word n-grams of the normalised text (the whole text if it is shorter than n words)."""
    words = normalise(text).split()
    if len(words) < n:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]
