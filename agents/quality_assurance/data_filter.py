"""The data filter: stream a JSONL dataset through every rule, write what passes and a report.

Order per batch: schema → length → PII → empathy (cheap, per sample) → crisis safety (the
crisis detector's embeddings, batched) → domain relevance → coherence (embeddings, batched) →
exact and near duplicates (against what was kept before, including reference datasets). A sample
is rejected by the first rule it fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
from pydantic import ValidationError

from agents.quality_assurance.dedup import Deduplicator
from agents.quality_assurance.relevance import DomainReferences, Embedder
from agents.quality_assurance.rules import (
    Rejection,
    check_crisis_safety,
    check_empathy,
    check_length,
    crisis_rejections,
    find_pii,
    scrub_pii,
)
from agents.quality_assurance.thresholds import DataThresholds
from agents.text.crisis import CrisisDetector
from agents.text.signals import Signals
from protocol.agents.quality_assurance import DataRule, FilterReport, RejectionExample, RuleReport
from protocol.datasets import ConversationSample
from runtime import atomic_write

__all__ = ["ALL_RULES", "DataFilter", "read_samples"]

ALL_RULES: tuple[DataRule, ...] = get_args(DataRule)
"""Every rule, in the order the report lists them."""
_BATCH = 256
_COHERENCE_MIN_OTHERS = 16
"""Coherence is judged against at least this many other replies (a smaller dataset is not judged)."""
_COHERENCE_POOL = 256
"""Replies of earlier batches kept to compare a small last batch with."""


def read_samples(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, raw line) of a JSONL file, skipping blank lines."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line


@dataclass
class _Tally:
    rejected: int = 0
    scrubbed: int = 0
    examples: list[RejectionExample] = field(default_factory=list)


class DataFilter:
    """Filters one domain's data; construct once per call (it remembers what it kept)."""

    def __init__(
        self,
        *,
        domain: str,
        thresholds: DataThresholds,
        signals: Signals,
        embedder: Embedder | None,
        references: DomainReferences | None,
        crisis: CrisisDetector | None = None,
        rules: Sequence[DataRule] = ALL_RULES,
    ) -> None:
        """``crisis``: the detector for the crisis-safety rule; without one it uses keywords only."""
        unknown = set(rules) - set(ALL_RULES)
        if unknown:
            raise ValueError(f"unknown rules: {sorted(unknown)}")
        if "relevance" in rules and (embedder is None or references is None):
            raise ValueError("the relevance rule needs an embedder and the domain references")
        if "coherence" in rules and embedder is None:
            raise ValueError("the coherence rule needs an embedder")
        self._rules = set(rules)
        self._domain = domain
        self._t = thresholds
        self._signals = signals
        self._embedder = embedder if {"relevance", "coherence"} & set(rules) else None
        self._references = references
        self._crisis = crisis if "crisis_safety" in rules else None
        self._dedup = Deduplicator(
            threshold=thresholds.near_duplicate_jaccard, permutations=thresholds.minhash_permutations
        )
        self._tallies: dict[str, _Tally] = {rule: _Tally() for rule in ALL_RULES}
        self._relevance_sum = 0.0
        self._relevance_n = 0
        self._earlier_replies = np.zeros((0, 0), dtype=np.float32)

    def remember(self, path: Path) -> int:
        """Index an already accepted dataset, so new samples repeating it are rejected."""
        count = 0
        for _, line in read_samples(path):
            try:
                sample = ConversationSample.model_validate_json(line)
            except ValidationError:
                continue
            self._dedup.add(f"ref:{sample.id}", sample.dialogue_text())
            count += 1
        return count

    def run(
        self,
        source: Path,
        kept_path: Path,
        rejections_path: Path,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> FilterReport:
        """Filter ``source`` into ``kept_path`` (and one JSON line per rejection into ``rejections_path``)."""
        seen = kept = 0
        with atomic_write(kept_path) as kept_file, atomic_write(rejections_path) as rejected_file:

            def reject(sample_id: str, rejection: Rejection, excerpt: str) -> None:
                tally = self._tallies[rejection.rule]
                tally.rejected += 1
                if len(tally.examples) < 3:
                    tally.examples.append(
                        RejectionExample(sample_id=sample_id, reason=rejection.reason, excerpt=excerpt[:200])
                    )
                rejected_file.write(
                    json.dumps({"id": sample_id, "rule": rejection.rule, "reason": rejection.reason}) + "\n"
                )

            for batch in _batches(read_samples(source), _BATCH):
                survivors: list[ConversationSample] = []
                for number, line in batch:
                    seen += 1
                    sample, rejection = self._cheap_rules(line)
                    if rejection is not None or sample is None:
                        sample_id = sample.id if sample is not None else f"line:{number}"
                        reject(sample_id, rejection or Rejection("schema", "unreadable"), line)
                    else:
                        survivors.append(sample)
                for sample, rejection in self._batch_rules(survivors):
                    if rejection is not None:
                        reject(sample.id, rejection, sample.dialogue_text())
                        continue
                    kept += 1
                    kept_file.write(sample.model_dump_json(exclude_none=True) + "\n")
                if progress is not None:
                    progress(seen)
        return self._report(seen, kept)

    def _cheap_rules(self, line: str) -> tuple[ConversationSample | None, Rejection | None]:
        try:
            sample = ConversationSample.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            return None, Rejection("schema", f"{where}: {first['msg']}")
        if "length" in self._rules and (r := check_length(sample, self._t)):
            return sample, r
        if "pii" in self._rules and (r := find_pii(sample, self._signals)):
            if self._t.pii == "reject":
                return sample, r
            sample = scrub_pii(sample, self._signals)
            self._tallies["pii"].scrubbed += 1
        if "empathy" in self._rules and (r := check_empathy(sample, self._signals)):
            return sample, r
        keywords_only = self._crisis is None and "crisis_safety" in self._rules
        if keywords_only and (r := check_crisis_safety(sample, self._signals)):
            return sample, r
        return sample, None

    def _batch_rules(self, samples: list[ConversationSample]) -> Iterable[tuple[ConversationSample, Rejection | None]]:
        if self._crisis is not None:
            verdicts = crisis_rejections(samples, self._crisis, self._signals)
            crisis = [is_crisis for rejection, is_crisis in verdicts if rejection is None]
            for sample, (rejection, _) in zip(samples, verdicts, strict=True):
                if rejection is not None:
                    yield sample, rejection
            samples = [s for s, (rejection, _) in zip(samples, verdicts, strict=True) if rejection is None]
        else:
            crisis = [self._signals.crisis_kind(s.turns("user")[0]) is not None for s in samples]
        scores: tuple[np.ndarray, np.ndarray] | None = None
        if samples and "relevance" in self._rules and self._embedder is not None and self._references is not None:
            texts = [f"{s.turns('user')[0]} {_substance(s)}" for s in samples]
            scores = self._references.score(self._embedder.encode(texts), self._domain)
        better = self._better_replies(samples) if samples and "coherence" in self._rules else None
        for i, sample in enumerate(samples):
            if scores is not None:
                similarity, rank = float(scores[0][i]), int(scores[1][i])
                self._relevance_sum += similarity
                self._relevance_n += 1
                # Crisis conversations are safety data every domain needs, whatever their subject.
                off_topic = rank > self._t.relevance_top_k or similarity < self._t.relevance_min
                if off_topic and not crisis[i]:
                    yield (
                        sample,
                        Rejection(
                            "relevance",
                            f"closer to {rank - 1} other domain(s) than to {self._domain} "
                            f"(similarity {similarity:.2f}; needs top {self._t.relevance_top_k} and >= "
                            f"{self._t.relevance_min:.2f})",
                        ),
                    )
                    continue
            # A crisis message's answer is judged by the crisis-safety rule: real help, whatever the wording.
            if better is not None and better[i] > self._t.coherence_max_better and not crisis[i]:
                reason = (
                    f"{better[i]:.0%} of the other replies fit its question better than its own "
                    f"(allowed: {self._t.coherence_max_better:.0%})"
                )
                yield sample, Rejection("coherence", reason)
                continue
            text = sample.dialogue_text()
            if "exact_duplicate" in self._rules and self._dedup.exact_duplicate(text):
                yield sample, Rejection("exact_duplicate", "same text as a kept sample")
                continue
            if "near_duplicate" in self._rules and (match := self._dedup.near_duplicate_of(text)):
                yield sample, Rejection("near_duplicate", f"{match[1]:.2f} similar to {match[0]}")
                continue
            self._dedup.add(sample.id, text)
            yield sample, None

    def _better_replies(self, samples: list[ConversationSample]) -> np.ndarray | None:
        """For each sample: the share of other replies closer to its first question than its own reply.

        A relative test: raw similarities differ between domains and wordings, but an answer to its
        own question ranks near the top of the dataset's replies, and one written for another
        question ranks anywhere. ``None`` when there are too few replies to rank against.
        """
        assert self._embedder is not None
        questions = self._embedder.encode([s.turns("user")[0] for s in samples])
        replies = self._embedder.encode([s.turns("assistant")[0] for s in samples])
        earlier = self._earlier_replies
        others = np.concatenate([replies, earlier]) if len(earlier) else replies
        self._earlier_replies = others[:_COHERENCE_POOL]
        if len(others) - 1 < _COHERENCE_MIN_OTHERS:
            return None
        fits = questions @ others.T  # row i: question i against every reply, its own at column i
        own = fits[np.arange(len(samples)), np.arange(len(samples))]
        return np.asarray((fits > own[:, None]).sum(axis=1) / (len(others) - 1))

    def _report(self, seen: int, kept: int) -> FilterReport:
        return FilterReport(
            input=seen,
            kept=kept,
            pass_rate=kept / seen if seen else 0.0,
            rules=[
                RuleReport(rule=rule, rejected=t.rejected, scrubbed=t.scrubbed, examples=t.examples)
                for rule, t in self._tallies.items()
            ],
            near_duplicate_rate=self._tallies["near_duplicate"].rejected / seen if seen else 0.0,
            mean_relevance=self._relevance_sum / self._relevance_n if self._relevance_n else None,
        )


def _batches(items: Iterable[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _substance(sample: ConversationSample) -> str:
    """What relevance judges with the first question: the first reply's longest paragraph (greetings
    and empathy lines are generic)."""
    return max(sample.turns("assistant")[0].split("\n\n"), key=len)
