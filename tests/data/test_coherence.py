"""A compositional sample's question and advice fit its situation (the topic-affinity table)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.data_generation.affinity import TopicAffinity
from agents.data_generation.dataset_files import write_batch
from agents.data_generation.material import DomainMaterial
from agents.llm.embeddings import default_embedder
from agents.quality_assurance import DataFilter
from agents.quality_assurance.thresholds import load_thresholds
from agents.text.signals import load_signals
from protocol.datasets import ConversationSample
from runtime import load_catalog

CATALOG = load_catalog()
SIGNALS = load_signals()
COMMON = load_common()


def bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """A transparent encoder: lines that share words are similar."""
    rows = np.zeros((len(texts), 512), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z]{4,}", text.lower()):
            rows[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 512] += 1.0
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def material(domain: str) -> DomainMaterial:
    return load_material(CATALOG.domain(domain).category, domain)


def test_lines_are_ranked_by_similarity_to_the_situation() -> None:
    m = material("general_health")
    affinity = TopicAffinity(m, bag_of_words)
    topic = m.topics[0]
    vectors = {
        "s": bag_of_words(topic.situations),
        "q": bag_of_words(topic.questions),
        "a": bag_of_words(topic.advice),
    }
    for s in range(len(topic.situations)):
        scores = np.round(vectors["q"] @ vectors["s"][s], 3)  # lines within 1e-3 count as equal
        ranked = affinity.questions(topic.name, s)
        assert sorted(ranked) == list(range(len(topic.questions)))
        assert [scores[i] for i in ranked] == sorted(scores, reverse=True)
        for q in range(len(topic.questions)):
            query = vectors["s"][s] + vectors["q"][q]
            advice_scores = np.round(vectors["a"] @ (query / np.linalg.norm(query)), 3)
            assert [advice_scores[i] for i in affinity.advice(topic.name, s, q)] == sorted(advice_scores, reverse=True)


def test_the_generator_draws_the_question_and_advice_from_the_best_fitting_lines() -> None:
    domain, m = CATALOG.domain("general_health"), material("general_health")
    affinity = TopicAffinity(m, bag_of_words)
    generator = CompositionalGenerator(domain, m, COMMON, SIGNALS, crisis_fraction=0.0, affinity=affinity)
    topics = {t.name: t for t in m.topics}
    seen_questions: set[tuple[str, int, int]] = set()
    for i in range(400):
        sample = generator.sample(0, i)
        topic = topics[sample.topic or ""]
        situation = int(sample.split_key.split(":")[1])
        user = sample.turns("user")[0]
        (question,) = [q for q, text in enumerate(topic.questions) if text in user]
        assert question in affinity.questions(topic.name, situation)[:2], sample.id
        seen_questions.add((topic.name, situation, question))
        best = {topic.advice[a] for a in affinity.advice(topic.name, situation, question)[:5]}
        given = [a for a in topic.advice if a in sample.turns("assistant")[0]]
        assert 2 <= len(given) <= 4 and set(given) <= best, sample.id
    # Still a choice: both fitting questions of a situation occur.
    pairs = {(t, s) for t, s, _ in seen_questions}
    assert len(seen_questions) > 1.5 * len(pairs)


@pytest.mark.parametrize("domain", ["general_health", "programming", "financial"])
def test_replies_fit_their_message_better_than_with_any_line_of_the_topic(domain: str) -> None:
    """Measured with MiniLM on the whole user message and the reply's advice paragraph."""
    d, m = CATALOG.domain(domain), material(domain)
    encode = default_embedder().encode

    def fit(affinity: TopicAffinity | None) -> np.ndarray:
        generator = CompositionalGenerator(d, m, COMMON, SIGNALS, crisis_fraction=0.0, affinity=affinity)
        samples = [generator.sample(0, i) for i in range(200)]
        users = encode([s.turns("user")[0] for s in samples])
        advice = encode([max(s.turns("assistant")[0].split("\n\n"), key=len) for s in samples])
        return np.asarray((users * advice).sum(axis=1))

    anything, fitting = fit(None), fit(TopicAffinity(m, encode))
    assert np.median(fitting) > np.median(anything) + 0.02
    assert fitting.mean() > anything.mean() + 0.02


def _filtered(tmp_path: Path, samples: list[ConversationSample], encode: Callable[..., np.ndarray]) -> list[dict]:  # type: ignore[type-arg]
    """Run only the coherence rule (and schema) over ``samples``; returns the rejection lines."""
    source = tmp_path / "in.jsonl"
    write_batch(source, samples)

    class Encoder:
        def encode(self, texts: list[str]) -> np.ndarray:
            return encode(texts)

    data_filter = DataFilter(
        domain=samples[0].domain,
        thresholds=load_thresholds(samples[0].category),
        signals=SIGNALS,
        embedder=Encoder(),  # type: ignore[arg-type]
        references=None,
        rules=("schema", "coherence"),
    )
    data_filter.run(source, tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl")
    return [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]


def _with_reply_of(sample: ConversationSample, other: ConversationSample) -> ConversationSample:
    messages = [m if m.role != "assistant" else other.messages[i] for i, m in enumerate(sample.messages[:3])]
    return sample.model_copy(update={"messages": messages, "id": f"{sample.id}-swapped"})


def test_the_coherence_rule_rejects_replies_written_for_another_question(tmp_path: Path) -> None:
    """A reply moved onto a question of another topic is caught most of the time; answers are kept."""
    d, m = CATALOG.domain("general_health"), material("general_health")
    encode = default_embedder().encode
    generator = CompositionalGenerator(d, m, COMMON, SIGNALS, crisis_fraction=0.1, affinity=TopicAffinity(m, encode))
    samples = [generator.sample(0, i) for i in range(200)]
    originals, donors = samples[:128], [s for s in samples[128:] if not s.crisis]
    swapped = []
    for sample in [s for s in originals if not s.crisis][:32]:
        donor = next(x for x in donors if x.topic != sample.topic)
        donors.remove(donor)
        swapped.append(_with_reply_of(sample, donor))
    rejected = {r["id"]: r for r in _filtered(tmp_path, [*originals, *swapped], encode)}
    assert all(r["rule"] == "coherence" and "fit its question better" in r["reason"] for r in rejected.values())
    caught = sum(s.id in rejected for s in swapped) / len(swapped)
    false_alarms = sum(s.id in rejected for s in originals) / len(originals)
    print(f"coherence rule: {caught:.0%} of swapped replies rejected, {false_alarms:.1%} of answers")
    assert caught >= 0.4
    assert false_alarms <= 0.06


def test_a_dataset_too_small_to_rank_against_is_not_judged_for_coherence(tmp_path: Path) -> None:
    d, m = CATALOG.domain("general_health"), material("general_health")
    generator = CompositionalGenerator(d, m, COMMON, SIGNALS, crisis_fraction=0.0)
    samples = [generator.sample(0, i) for i in range(12)]
    other = next(s for s in samples if s.topic != samples[0].topic)
    assert _filtered(tmp_path, [_with_reply_of(samples[0], other), *samples[1:]], bag_of_words) == []
