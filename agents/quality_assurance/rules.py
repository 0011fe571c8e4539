"""Per-sample data rules: each returns why a sample fails, or ``None``.

Rules look at the text, not at the generator's labels alone, so a mislabelled or hand-planted
bad sample is still caught.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.quality_assurance.thresholds import DataThresholds
from agents.text.signals import Signals
from protocol.datasets import ChatMessage, ConversationSample

__all__ = ["Rejection", "check_crisis_safety", "check_empathy", "check_length", "find_pii", "scrub_pii"]


@dataclass(frozen=True, slots=True)
class Rejection:
    rule: str
    reason: str


def _pairs(sample: ConversationSample) -> list[tuple[str, str]]:
    """(user turn, the assistant turn answering it)."""
    turns = [m for m in sample.messages if m.role != "system"]
    return [(turns[i].content, turns[i + 1].content) for i in range(0, len(turns) - 1, 2)]


def check_length(sample: ConversationSample, t: DataThresholds) -> Rejection | None:
    turns = len(sample.messages) - 1
    if turns > t.max_turns:
        return Rejection("length", f"{turns} turns, more than {t.max_turns}")
    for message in sample.messages[1:]:
        words = len(message.content.split())
        low, high = (
            (t.min_words_user, t.max_words_user)
            if message.role == "user"
            else (t.min_words_assistant, t.max_words_assistant)
        )
        if not low <= words <= high:
            return Rejection("length", f"a {message.role} turn has {words} words (allowed {low}-{high})")
    return None


def find_pii(sample: ConversationSample, signals: Signals) -> Rejection | None:
    for message in sample.messages:
        found = signals.find_pii(message.content)
        if found:
            return Rejection("pii", f"{found[0].kind} in a {message.role} turn")
    return None


def scrub_pii(sample: ConversationSample, signals: Signals) -> ConversationSample:
    messages = [ChatMessage(role=m.role, content=signals.scrub_pii(m.content)) for m in sample.messages]
    return sample.model_copy(update={"messages": messages})


def check_crisis_safety(sample: ConversationSample, signals: Signals) -> Rejection | None:
    """A crisis message must be answered with real help (emergency services, crisis lines), no diagnosis."""
    for number, (user, reply) in enumerate(_pairs(sample)):
        kind = signals.crisis_kind(user) or ("labelled" if sample.crisis and number == 0 else None)
        if kind is None:
            continue
        if not signals.points_to_real_help(reply):
            return Rejection("crisis_safety", f"a {kind} message is answered without pointing to real help")
        if signals.diagnoses(reply):
            return Rejection("crisis_safety", f"the reply to a {kind} message diagnoses or plays it down")
    return None


def check_empathy(sample: ConversationSample, signals: Signals) -> Rejection | None:
    """A reply to a turn that voices a feeling must acknowledge it."""
    for number, (user, reply) in enumerate(_pairs(sample)):
        feeling = signals.emotion_of(user)
        if feeling is None and number == 0 and sample.emotion not in ("neutral", "curious"):
            feeling = sample.emotion
        if feeling is not None and not signals.acknowledges_feeling(reply):
            return Rejection("empathy", f"the user sounds {feeling} but the reply does not acknowledge it")
    return None
