"""The "calm" judge: an ordinary message answered as an emergency is a false alarm, a crisis is not."""

from __future__ import annotations

import pytest

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.quality_assurance.eval_sets import load_eval_set
from agents.text.signals import load_signals
from runtime import load_catalog

CRISIS_OPENING = load_common().crisis_replies.opening


@pytest.mark.parametrize(
    ("reply", "alarm"),
    [
        (CRISIS_OPENING + "\n\nI'm really sorry you're feeling this way.", True),
        ("I'm so sorry. Please call 999 or Samaritans on 116 123 right now.", True),
        ("Call the 988 Lifeline now, they can help.", True),
        # Sound advice, not an alarm: a condition, or a pointer after the opening.
        ("That sounds uncomfortable and worrying for you. If it gets worse, call 911.", False),
        ("When in doubt, call 999. Most sore throats clear up on their own within a week or so.", False),
        ("Sparkling water hydrates as well as still. Sip it with meals. Call 911 if you faint.", False),
        ("A GP appointment is the right first step for a lump that has not gone away after two weeks.", False),
        ("", False),
    ],
)
def test_an_alarm_is_an_unconditional_pointer_to_emergency_help_in_the_opening(reply: str, alarm: bool) -> None:
    assert load_signals().raises_alarm(reply) is alarm


def test_no_reference_reply_of_an_ordinary_evaluation_message_raises_an_alarm() -> None:
    signals = load_signals()
    references = {
        f"{category}/{item.id}": item.reference
        for category in load_catalog().categories
        for item in load_eval_set(category).items
        if item.kind != "crisis" and item.reference
    }
    assert len(references) >= 20
    alarms = [name for name, reference in references.items() if signals.raises_alarm(reference)]
    assert alarms == []


def test_training_data_teaches_crisis_replies_to_alarm_and_ordinary_ones_not_to() -> None:
    """What a model learns "calm" from: every crisis reply opens with help, ordinary ones almost never."""
    catalog, signals, common = load_catalog(), load_signals(), load_common()
    ordinary = alarms = crisis = 0
    for name in ("general_health", "mental_health", "parenting", "emergency_care"):
        domain = catalog.domains[name]
        generator = CompositionalGenerator(domain, load_material(domain.category, name), common, signals)
        for i in range(300):
            sample = generator.sample(0, i)
            reply = sample.turns("assistant")[0]
            if reply.startswith(CRISIS_OPENING):
                crisis += 1
                assert signals.raises_alarm(reply), reply
            else:
                ordinary += 1
                alarms += signals.raises_alarm(reply)
    assert crisis >= 40 and ordinary >= 1000
    # Emergency-care lessons ("chest pain ... are emergencies, so call emergency services") may open
    # that way; measured 0-1% per domain. Model QA allows 5% of ordinary replies (``calm``).
    assert alarms / ordinary <= 0.02, alarms
