"""Per-sample data rules: each returns why a sample fails, or ``None``.

Rules look at the text, not at the generator's labels alone, so a mislabelled or hand-planted
bad sample is still caught.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.quality_assurance.thresholds import DataThresholds
from agents.text.crisis import CrisisDetector
from agents.text.signals import Signals
from protocol.datasets import ChatMessage, ConversationSample

__all__ = [
    "Rejection",
    "check_crisis_safety",
    "check_empathy",
    "check_length",
    "crisis_rejections",
    "find_pii",
    "scrub_pii",
]


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


def _no_help(kind: str, reply: str, signals: Signals) -> str:
    invented = signals.invented_numbers(reply)
    if invented:
        return f"the reply to a {kind} message gives a number that is not a known help line: {', '.join(invented)}"
    return f"a {kind} message is answered without pointing to real help"


def check_crisis_safety(sample: ConversationSample, signals: Signals) -> Rejection | None:
    """A crisis message must be answered with real help (emergency services, crisis lines), no diagnosis.

    Keywords only: the rule of a filter without the detector (``crisis_rejections`` is the full one).
    """
    for number, (user, reply) in enumerate(_pairs(sample)):
        kind = signals.crisis_kind(user) or ("labelled" if sample.crisis and number == 0 else None)
        if kind is None:
            continue
        if not signals.points_to_real_help(reply):
            return Rejection("crisis_safety", _no_help(kind, reply, signals))
        if signals.diagnoses(reply):
            return Rejection("crisis_safety", f"the reply to a {kind} message diagnoses or plays it down")
    return None


def crisis_rejections(
    samples: list[ConversationSample], detector: CrisisDetector, signals: Signals
) -> list[tuple[Rejection | None, bool]]:
    """``check_crisis_safety`` by meaning, for a batch (one embedding pass for every user turn).

    Per sample: its rejection, and whether any of its user turns is a crisis.
    """
    pairs = [(i, number, user, reply) for i, s in enumerate(samples) for number, (user, reply) in enumerate(_pairs(s))]
    verdicts = detector.detect([user for _, _, user, _ in pairs])
    crises: list[tuple[int, str, str]] = []
    for (i, number, _, reply), verdict in zip(pairs, verdicts, strict=True):
        kind: str | None = verdict.kind or ("labelled" if samples[i].crisis and number == 0 else None)
        if kind is not None:
            crises.append((i, kind, reply))
    helps = detector.points_to_real_help([reply for _, _, reply in crises])
    out: list[tuple[Rejection | None, bool]] = [(None, False)] * len(samples)
    for (i, kind, reply), helped in zip(crises, helps, strict=True):
        rejection = out[i][0]
        if rejection is None and not helped:
            rejection = Rejection("crisis_safety", _no_help(kind, reply, signals))
        elif rejection is None and signals.diagnoses(reply):
            rejection = Rejection("crisis_safety", f"the reply to a {kind} message diagnoses or plays it down")
        out[i] = (rejection, True)
    return out


def check_empathy(sample: ConversationSample, signals: Signals) -> Rejection | None:
    """A reply to a turn that voices a feeling must acknowledge it."""
    for number, (user, reply) in enumerate(_pairs(sample)):
        feeling = signals.emotion_of(user)
        if feeling is None and number == 0 and sample.emotion not in ("neutral", "curious"):
            feeling = sample.emotion
        if feeling is not None and not signals.acknowledges_feeling(reply):
            return Rejection("empathy", f"the user sounds {feeling} but the reply does not acknowledge it")
    return None
