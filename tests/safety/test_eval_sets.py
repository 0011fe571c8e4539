"""The hand-written evaluation sets: complete, well-formed, and never seen in training."""

from __future__ import annotations

import importlib.resources
from collections import Counter
from pathlib import Path

import pytest
import yaml

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.quality_assurance.eval_sets import load_eval_set
from agents.text.crisis import CRISIS_KINDS, load_training_set
from agents.text.crisis_measure import load_heldout
from agents.text.ngrams import normalise
from agents.text.signals import load_signals
from runtime import load_catalog
from tests.texts import all_strings

CATALOG = load_catalog()
CONFIGS = Path(str(importlib.resources.files("configs")))
_SHINGLE = 6
_COPIED = 0.5
"""A text sharing this share of its 6-word runs with one training text is a copy of it. (Shared
short phrases are normal: "I don't know where to start", a helpline's number.)"""


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = normalise(text).split()
    return {tuple(words[i : i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)} or {tuple(words)}


def _copies(texts: list[str], training: list[str]) -> list[str]:
    """The texts that are (near) copies of one of the training texts."""
    owners: dict[tuple[str, ...], set[int]] = {}
    for i, text in enumerate(training):
        for shingle in _shingles(text):
            owners.setdefault(shingle, set()).add(i)
    copies = []
    for text in texts:
        shingles = _shingles(text)
        counts = Counter(i for shingle in shingles for i in owners.get(shingle, ()))
        if counts and counts.most_common(1)[0][1] >= _COPIED * len(shingles):
            copies.append(text)
    return copies


def _evaluation_texts() -> list[str]:
    texts = []
    for category in CATALOG.categories:
        for item in load_eval_set(category).items:
            texts += [item.text, *([item.reference] if item.reference else [])]
    return texts


@pytest.mark.parametrize("category", sorted(CATALOG.categories))
def test_every_category_has_an_evaluation_set_of_every_kind(category: str) -> None:
    evaluation = load_eval_set(category)
    kinds = Counter(item.kind for item in evaluation.items)
    assert len(evaluation.items) >= 40 and evaluation.category == category
    assert kinds["question"] >= 12 and kinds["emotional"] >= 8 and kinds["off_topic"] >= 3, kinds
    crisis = Counter(item.crisis_kind for item in evaluation.items if item.kind == "crisis")
    assert set(crisis) == set(CRISIS_KINDS), crisis
    if CATALOG.categories[category].crisis_safety:
        assert kinds["crisis"] >= 20
    own = set(CATALOG.categories[category].domains)
    assert {item.domain for item in evaluation.items if item.domain} <= own
    assert all(item.reference for item in evaluation.items if item.kind in ("question", "emotional"))
    assert len(evaluation.sha256) == 64


def test_no_evaluation_text_is_in_any_training_material() -> None:
    """No evaluation message or reference is a copy of a text in the material (every domain's and the
    common file) or in the crisis detector's training set."""
    training = [
        s
        for path in sorted((CONFIGS / "material").rglob("*.yaml"))
        for s in all_strings(yaml.safe_load(path.read_text()))
    ]
    training += all_strings(load_training_set().model_dump())
    assert not _copies(_evaluation_texts(), training)


def test_no_evaluation_text_is_in_generated_training_data() -> None:
    """The generator's output for a domain of every category repeats no evaluation text."""
    common, signals = load_common(), load_signals()
    generated = []
    for category, spec in CATALOG.categories.items():
        domain = CATALOG.domain(next(iter(spec.domains)))
        generator = CompositionalGenerator(domain, load_material(category, domain.name), common, signals)
        generated += [m.content for i in range(300) for m in generator.sample(0, i).messages]
    assert not _copies(_evaluation_texts(), generated)


def test_the_detector_never_trains_on_its_held_out_set() -> None:
    train = {normalise(t) for texts in load_training_set().messages.values() for t in texts}
    train |= {normalise(t) for texts in load_training_set().replies.values() for t in texts}
    heldout = load_heldout()
    crises = heldout.crises()
    assert len(crises) >= 150 and sum(indirect for _, _, indirect in crises) >= len(crises) / 2
    held = [t for t, _, _ in crises] + heldout.non_crises() + all_strings(heldout.replies)
    assert not [t for t in held if normalise(t) in train]
    assert not _copies(held, all_strings(load_training_set().model_dump()))
