"""Which of a topic's questions, follow-ups and advice fit a situation, by sentence-embedding similarity.

Material lines of one topic are only loosely interchangeable: a user with a stomach bug who asks
about heartburn and is told about fibre reads as three people talking past each other. The
compositional generator asks this table which lines fit the situation (and the question) best,
and samples among those instead of among all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agents.data_generation.material import DomainMaterial

__all__ = ["TopicAffinity"]

Encode = Callable[[Sequence[str]], np.ndarray]
"""Texts to L2-normalised row vectors."""


@dataclass(frozen=True, slots=True)
class _TopicVectors:
    situations: np.ndarray
    questions: np.ndarray
    advice: np.ndarray
    user_followups: np.ndarray


def _ranked(scores: np.ndarray) -> list[int]:
    # Rounded, then a stable sort: lines within 1e-3 of each other keep material order, so the last
    # float bits of an embedding (another CPU, another torch) do not reorder them.
    return [int(i) for i in np.argsort(-np.round(scores, 3), kind="stable")]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class TopicAffinity:
    """Per topic of one domain's material: its lines ranked by how well they fit a situation."""

    def __init__(self, material: DomainMaterial, encode: Encode) -> None:
        self.material = material
        """The material the table was built from."""
        texts: list[str] = []
        for topic in material.topics:
            texts += [*topic.situations, *topic.questions, *topic.advice, *topic.user_followups]
        vectors = encode(texts)  # one batch for the whole domain
        self._topics: dict[str, _TopicVectors] = {}
        start = 0
        for topic in material.topics:
            parts = []
            for lines in (topic.situations, topic.questions, topic.advice, topic.user_followups):
                parts.append(vectors[start : start + len(lines)])
                start += len(lines)
            self._topics[topic.name] = _TopicVectors(*parts)

    def questions(self, topic: str, situation: int) -> list[int]:
        """The topic's questions, best fit for the situation first."""
        t = self._topics[topic]
        return _ranked(t.questions @ t.situations[situation])

    def advice(self, topic: str, situation: int, question: int) -> list[int]:
        """The topic's advice, best answer to the situation and question together first."""
        t = self._topics[topic]
        return _ranked(t.advice @ _unit(t.situations[situation] + t.questions[question]))

    def user_followups(self, topic: str, situation: int, question: int) -> list[int]:
        """The topic's follow-up questions, most natural after the situation and question first."""
        t = self._topics[topic]
        return _ranked(t.user_followups @ _unit(t.situations[situation] + t.questions[question]))

    def advice_for_followup(self, topic: str, followup: int, candidates: Sequence[int]) -> list[int]:
        """``candidates`` (advice indices), best answer to the follow-up question first."""
        t = self._topics[topic]
        scores = t.advice[list(candidates)] @ t.user_followups[followup]
        return [candidates[i] for i in _ranked(scores)]
