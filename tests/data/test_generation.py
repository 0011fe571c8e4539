"""The compositional generator: valid, labelled, reproducible, varied, and safe on crisis messages."""

from __future__ import annotations

import importlib.resources
from collections import Counter
from pathlib import Path

import pytest
import yaml

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.data_generation.compositional import REPLY_STYLE
from agents.quality_assurance.rules import check_crisis_safety, check_empathy, find_pii
from agents.text.crisis import CRISIS_KINDS, load_training_set
from agents.text.crisis_measure import load_heldout
from agents.text.signals import load_signals
from runtime import load_catalog
from tests.texts import all_strings

CATALOG = load_catalog()
SIGNALS = load_signals()
COMMON = load_common()


def generator(domain: str) -> CompositionalGenerator:
    d = CATALOG.domain(domain)
    return CompositionalGenerator(d, load_material(d.category, d.name), COMMON, SIGNALS)


@pytest.mark.parametrize("domain", sorted(CATALOG.domains))
def test_every_domain_has_valid_material(domain: str) -> None:
    d = CATALOG.domain(domain)
    material = load_material(d.category, d.name)
    assert material.domain == domain
    if d.crisis_safety:
        kinds = Counter(line.kind for line in material.crisis)
        assert kinds["self_harm"] >= 2 and kinds["medical_emergency"] >= 2, kinds
    else:
        assert material.crisis == []


def test_same_seed_same_sample_and_different_seed_different_sample() -> None:
    g = generator("mental_health")
    assert g.sample(7, 123) == g.sample(7, 123)
    assert g.sample(7, 123) != g.sample(8, 123)
    assert [g.sample(1, i).id for i in range(3)] == [
        "mental_health-1-000000",
        "mental_health-1-000001",
        "mental_health-1-000002",
    ]


def test_samples_are_labelled_consistently_with_their_text() -> None:
    g = generator("stress_management")
    samples = [g.sample(0, i) for i in range(600)]
    assert {s.domain for s in samples} == {"stress_management"}
    multi = [s for s in samples if len(s.turns("user")) > 1]
    assert 0.2 < len(multi) / len(samples) < 0.5
    for s in samples:
        if s.emotion not in ("neutral", "distressed"):
            assert "acknowledge_feeling" in s.empathy_markers
            assert SIGNALS.acknowledges_feeling(s.turns("assistant")[0])
        assert check_empathy(s, SIGNALS) is None, s.id
        assert check_crisis_safety(s, SIGNALS) is None, s.id
    emotions = Counter(s.emotion for s in samples)
    assert len(emotions) >= 10  # the label set is really used


def test_crisis_messages_get_real_help() -> None:
    g = generator("mental_health")
    crisis = [s for s in (g.sample(3, i) for i in range(800)) if s.crisis]
    assert len(crisis) >= 20
    kinds = Counter(SIGNALS.crisis_kind(s.turns("user")[0]) for s in crisis)
    assert kinds["self_harm"] > 0
    for s in crisis:
        reply = s.turns("assistant")[0]
        assert reply.startswith(COMMON.crisis_replies.opening)  # help first, in the words it is learnt by
        assert s.emotion == "distressed" and "crisis_resources" in s.empathy_markers
        assert SIGNALS.points_to_real_help(reply) and not SIGNALS.diagnoses(reply)
        assert len(s.turns("user")) == 1


def test_crisis_replies_of_every_style_survive_the_data_filter() -> None:
    """The hotlines of abuse and child-danger replies are public numbers, not personal data: a PII rule
    that rejected them took every such reply out of training (the bug this guards)."""
    d = CATALOG.domain("general_health")
    g = CompositionalGenerator(d, load_material(d.category, d.name), COMMON, SIGNALS, crisis_fraction=1.0)
    crisis = [g.sample(0, i) for i in range(300)]
    rejected = [(s.id, r.reason) for s in crisis if (r := find_pii(s, SIGNALS) or check_crisis_safety(s, SIGNALS))]
    assert rejected == []
    hotlines = {"1-800-799-7233", "0808 2000 247", "1-800-422-4453", "0808 800 5000"}
    assert sum(any(h in s.turns("assistant")[0] for h in hotlines) for s in crisis) >= 30


def test_crisis_messages_come_in_the_detector_training_sets_variety_and_never_from_its_held_out_set() -> None:
    """A model trained on a few dozen plain crisis messages misses the rest: the generator also draws
    the crisis detector's labelled training messages (every kind), never the held-out ones."""
    d = CATALOG.domain("general_health")
    g = CompositionalGenerator(d, load_material(d.category, d.name), COMMON, SIGNALS, crisis_fraction=1.0)
    users = {s.turns("user")[0] for s in (g.sample(0, i) for i in range(1500))}
    labelled = load_training_set().messages
    for kind in CRISIS_KINDS:
        assert len(COMMON.crisis_messages[kind]) >= 100, kind
        assert users & set(labelled[kind]), kind
    heldout = load_heldout()
    assert not users & {t for t, _, _ in heldout.crises()}


def test_every_number_the_material_gives_is_a_known_help_line() -> None:
    """No generated reply can teach a model a number that is not a real help line."""
    root = Path(str(importlib.resources.files("configs").joinpath("material")))
    texts = [t for path in sorted(root.rglob("*.yaml")) for t in all_strings(yaml.safe_load(path.read_text()))]
    assert [(t, n) for t in texts if (n := SIGNALS.invented_numbers(t))] == []


def test_the_crisis_fraction_sets_the_share_of_crisis_conversations() -> None:
    d = CATALOG.domain("general_health")
    material = load_material(d.category, d.name)
    for fraction in (0.06, 0.2):
        g = CompositionalGenerator(d, material, COMMON, SIGNALS, crisis_fraction=fraction)
        share = sum(g.sample(0, i).crisis for i in range(1000)) / 1000
        assert abs(share - fraction) < 0.03, (fraction, share)


def test_non_crisis_domains_never_produce_crisis_samples() -> None:
    g = generator("programming")
    assert not any(g.sample(0, i).crisis for i in range(300))


def test_topic_weights_steer_the_mix() -> None:
    g = generator("sleep")
    topics = [t.name for t in g.material.topics]
    favoured = {topics[0]: 1.0, **{t: 0.05 for t in topics[1:]}}
    drawn = Counter(g.sample(0, i, topic_weights=favoured).topic for i in range(400))
    assert drawn[topics[0]] > 0.5 * sum(drawn.values())


def test_common_material_agrees_with_the_signals_qa_checks() -> None:
    """Every acknowledgement is recognised as one, and every voiced feeling as its own emotion."""
    for emotion, lines in COMMON.emotions.items():
        for ack in lines.ack:
            assert SIGNALS.acknowledges_feeling(ack), ack
        for user in lines.user:
            assert SIGNALS.emotion_of(user) == emotion, user
    for opener in COMMON.second_turn_openers:
        assert SIGNALS.acknowledges_feeling(opener), opener
    # Every crisis kind has plain messages (many without a keyword: the model must learn those too)
    # and a reply style whose opening, acknowledgements and notes all pass QA.
    assert set(COMMON.crisis_messages) == set(CRISIS_KINDS) == set(REPLY_STYLE)
    for kind, messages in COMMON.crisis_messages.items():
        assert len(messages) >= 30, kind
        assert sum(SIGNALS.crisis_kind(m) is None for m in messages) >= len(messages) / 3, kind
    assert SIGNALS.points_to_real_help(COMMON.crisis_replies.opening)
    for style in set(REPLY_STYLE.values()):
        reply = getattr(COMMON.crisis_replies, style)
        for ack in reply.acknowledge:
            assert SIGNALS.acknowledges_feeling(ack), ack
        for note in COMMON.safety_notes[style]:
            assert SIGNALS.points_to_real_help(note), note
