"""Streaming dataset statistics (constant memory: distinct 3-grams are counted with HyperLogLog)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from datasketch import HyperLogLogPlusPlus

from agents.text.ngrams import word_ngrams
from protocol.agents.data_generation import DatasetStats
from protocol.datasets import ConversationSample

__all__ = ["StatsAccumulator", "dataset_stats"]


class StatsAccumulator:
    """Add samples one by one; ``result()`` at any point."""

    def __init__(self) -> None:
        self.samples = 0
        self.multi_turn = 0
        self.crisis = 0
        self.emotions: Counter[str] = Counter()
        self.topics: Counter[str] = Counter()
        self.system_prompts: Counter[str] = Counter()
        self._user_words = self._user_turns = self._assistant_words = self._assistant_turns = 0
        self._trigrams = 0
        self._distinct = HyperLogLogPlusPlus(p=14)

    def add(self, sample: ConversationSample) -> None:
        self.samples += 1
        users = sample.turns("user")
        assistants = sample.turns("assistant")
        self.multi_turn += len(users) > 1
        self.crisis += sample.crisis
        self.emotions[sample.emotion] += 1
        self.topics[sample.topic or "(none)"] += 1
        for system in sample.turns("system")[:1]:
            self.system_prompts[system] += 1
        self._user_turns += len(users)
        self._user_words += sum(len(u.split()) for u in users)
        self._assistant_turns += len(assistants)
        self._assistant_words += sum(len(a.split()) for a in assistants)
        for gram in word_ngrams(sample.dialogue_text(), 3):
            self._trigrams += 1
            self._distinct.update(gram)

    def result(self) -> DatasetStats:
        return DatasetStats(
            samples=self.samples,
            multi_turn=self.multi_turn,
            crisis=self.crisis,
            emotions=dict(sorted(self.emotions.items())),
            topics=dict(sorted(self.topics.items())),
            mean_words_user=self._user_words / self._user_turns if self._user_turns else 0.0,
            mean_words_assistant=self._assistant_words / self._assistant_turns if self._assistant_turns else 0.0,
            distinct_3grams=round(self._distinct.count()),
            distinct_3gram_ratio=min(1.0, self._distinct.count() / self._trigrams) if self._trigrams else 0.0,
            system_prompts=dict(self.system_prompts.most_common()),
        )


def dataset_stats(path: Path) -> DatasetStats:
    acc = StatsAccumulator()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                acc.add(ConversationSample.model_validate_json(line))
    return acc.result()
