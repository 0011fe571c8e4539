"""The offline default generator: conversations composed from per-domain knowledge.

A user turn combines an optional persona, a situation, an optional feeling and a question from
one topic of the domain; the reply acknowledges the feeling, gives two to four of the topic's
advice points and asks a follow-up, sometimes with a referral. Given a ``TopicAffinity``, the
question is one that fits the situation and the advice is drawn from the lines that best answer
both (sentence-embedding similarity); without one, any line of the topic goes. Crisis messages (healthcare)
get a reply that points to emergency services and crisis lines. Every sample is a pure function
of (domain, seed, index), so a dataset is reproducible and can be regenerated in any order.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from agents.data_generation.affinity import TopicAffinity
from agents.data_generation.material import DomainMaterial, Topic
from agents.text.crisis import load_training_set
from agents.text.signals import CrisisKind, Signals
from protocol.agents.data_generation import DEFAULT_CRISIS_FRACTION
from protocol.datasets import ChatMessage, ConversationSample, EmpathyMarker
from runtime import Domain

__all__ = ["CommonMaterial", "CompositionalGenerator", "load_common"]


class _EmotionLines(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    user: list[str]
    ack: list[str]


class _SelfHarmReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    acknowledge: list[str]
    care: list[str]
    lines: list[str]
    connect: list[str]
    check: list[str]


class _EmergencyReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    acknowledge: list[str]
    meanwhile: list[str]
    limits: list[str]
    check: list[str]


class _DangerReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    acknowledge: list[str]
    lines: list[str]
    safety: list[str]
    check: list[str]


class _CrisisReplies(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    opening: str
    """The one sentence every crisis reply starts with (see ``_common.yaml``)."""
    self_harm: _SelfHarmReply
    medical_emergency: _EmergencyReply
    danger: _DangerReply


ReplyStyle = Literal["self_harm", "medical_emergency", "danger"]
"""How a crisis reply is built: crisis lines, emergency services, or safety from someone else."""

REPLY_STYLE: dict[CrisisKind, ReplyStyle] = {
    "suicide": "self_harm",
    "self_harm": "self_harm",
    "eating_disorder": "self_harm",
    "overdose_poisoning": "medical_emergency",
    "medical_emergency": "medical_emergency",
    "domestic_abuse": "danger",
    "child_danger": "danger",
}


class CommonMaterial(BaseModel):
    """Domain-independent pieces: feelings, acknowledgements, safety notes, crisis replies."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    system_prompts: list[str]
    emotions: dict[str, _EmotionLines]
    validations: list[str]
    encouragements: list[str]
    offers: list[str]
    second_turn_openers: list[str]
    personas_intro: list[str]
    safety_notes: dict[ReplyStyle, list[str]]
    crisis_messages: dict[CrisisKind, list[str]]
    crisis_replies: _CrisisReplies


def load_common(root: Path | None = None, *, catalog_dir: Path | None = None) -> CommonMaterial:
    """``_common.yaml`` of the material under ``root``, its crisis messages joined by the crisis
    detector's labelled training messages (``configs/safety``, under ``catalog_dir`` if it has them).

    A model trained on a few dozen plain crisis messages answers those and misses the rest; the
    detector's set holds about 150 per kind, many phrased without a keyword or hidden in an
    ordinary request. Its held-out set and the evaluation sets are never used here.
    """
    base = root or Path(str(importlib.resources.files("configs"))) / "material"
    common = CommonMaterial.model_validate(yaml.safe_load((base / "_common.yaml").read_text(encoding="utf-8")))
    labelled = load_training_set(catalog_dir).messages
    joined = {
        kind: [*texts, *(t for t in labelled.get(kind, []) if t not in texts)]
        for kind, texts in common.crisis_messages.items()
    }
    return common.model_copy(update={"crisis_messages": joined})


_FITTING_QUESTIONS = 2
"""A question is drawn from the two that fit the situation best."""
_FITTING_ADVICE = 5
"""A first reply's two to four advice lines are drawn from the five that answer best."""
_FITTING_FOLLOWUPS = 2
"""A user's follow-up is drawn from the two most natural after the first turn."""


def _rng(*key: object) -> random.Random:
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _join_persona(intro: str, persona: str, situation: str) -> str:
    lead = intro.format(persona=persona)
    if lead.endswith(". "):
        return lead + situation
    starts_with_i = situation.startswith(("I ", "I'"))
    return lead + (situation if starts_with_i else situation[0].lower() + situation[1:])


class CompositionalGenerator:
    """Composes conversations for one domain from its material."""

    name = "compositional"

    def __init__(
        self,
        domain: Domain,
        material: DomainMaterial,
        common: CommonMaterial,
        signals: Signals,
        *,
        multi_turn_fraction: float = 0.35,
        crisis_fraction: float = DEFAULT_CRISIS_FRACTION,
        affinity: TopicAffinity | None = None,
    ) -> None:
        self.domain = domain
        self.affinity = affinity
        self.material = material
        self.common = common
        self.signals = signals
        self.multi_turn_fraction = multi_turn_fraction
        self.crisis_fraction = crisis_fraction if material.crisis else 0.0
        # (kind, text, the domain's own): plain messages from the common material join the domain's.
        self._crisis_lines: list[tuple[CrisisKind, str, bool]] = [(c.kind, c.text, True) for c in material.crisis]
        if material.crisis:
            self._crisis_lines += [(k, t, False) for k, texts in common.crisis_messages.items() for t in texts]
        # Excitement rarely fits a request for help; it is only used when the user's own words show it.
        self._feelings = [e for e, lines in common.emotions.items() if lines.user and e != "excited"]

    def sample(self, seed: int, index: int, *, topic_weights: Mapping[str, float] | None = None) -> ConversationSample:
        """The sample at ``index`` of the dataset with ``seed`` (topic weights steer regeneration)."""
        rng = _rng(self.domain.name, seed, index)
        system = rng.choice(self.common.system_prompts).format(role=self.material.role)
        sample_id = f"{self.domain.name}-{seed}-{index:06d}"
        if rng.random() < self.crisis_fraction:
            line_index = rng.randrange(len(self._crisis_lines))
            kind, text, own = self._crisis_lines[line_index]
            user = self._with_persona(rng, text) if own else text
            return self._crisis_sample(rng, sample_id, system, user, kind, f"crisis:{line_index}", None)

        topic = self._pick_topic(rng, topic_weights)
        situation_index = rng.randrange(len(topic.situations))
        question = self._question(rng, topic, situation_index)
        user = self._user_turn(rng, topic.situations[situation_index], topic.questions[question])
        emotion = self._emotion(rng, user)
        if emotion != "neutral":
            user = self._add_feeling(rng, user, emotion)
        split_key = f"{topic.name}:{situation_index}"
        # Material may mention warning signs (asking what a stroke looks like, say): answer the
        # question, and still point to emergency help.
        crisis_kind = self.signals.crisis_kind(user)

        markers: set[EmpathyMarker] = set()
        advice = self._advice_order(rng, topic, situation_index, question)
        multi_turn = rng.random() < self.multi_turn_fraction and crisis_kind is None
        given = advice[: rng.randint(2, 3 if multi_turn else 4)]
        first = self._reply(rng, emotion, [topic.advice[i] for i in given], topic, markers, safety=crisis_kind)
        messages = [
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=user),
            ChatMessage(role="assistant", content=first),
        ]
        if multi_turn:
            follow_index = self._user_followup(rng, topic, situation_index, question)
            follow = topic.user_followups[follow_index]
            if self.signals.crisis_kind(follow) is None:
                rest = [i for i in advice if i not in given]
                if self.affinity is not None:
                    rest = self.affinity.advice_for_followup(topic.name, follow_index, rest)
                more = [topic.advice[i] for i in rest[: rng.randint(1, 3)]]
                second = self._second_reply(rng, follow, more, topic, markers)
                messages += [
                    ChatMessage(role="user", content=follow),
                    ChatMessage(role="assistant", content=second),
                ]
        return ConversationSample(
            id=sample_id,
            domain=self.domain.name,
            category=self.domain.category,
            messages=messages,
            emotion=emotion,
            empathy_markers=sorted(markers),
            crisis=crisis_kind is not None,
            topic=topic.name,
            generator=self.name,
            split_key=split_key,
        )

    # -- which lines fit together ---------------------------------------------------------
    def _question(self, rng: random.Random, topic: Topic, situation: int) -> int:
        if self.affinity is None:
            return rng.randrange(len(topic.questions))
        return rng.choice(self.affinity.questions(topic.name, situation)[:_FITTING_QUESTIONS])

    def _advice_order(self, rng: random.Random, topic: Topic, situation: int, question: int) -> list[int]:
        """Advice indices in the order they are given: the best-fitting few first, in random order."""
        if self.affinity is None:
            order = list(range(len(topic.advice)))
            rng.shuffle(order)
            return order
        ranked = self.affinity.advice(topic.name, situation, question)
        best = ranked[:_FITTING_ADVICE]
        rng.shuffle(best)
        return best + ranked[_FITTING_ADVICE:]

    def _user_followup(self, rng: random.Random, topic: Topic, situation: int, question: int) -> int:
        if self.affinity is None:
            return rng.randrange(len(topic.user_followups))
        return rng.choice(self.affinity.user_followups(topic.name, situation, question)[:_FITTING_FOLLOWUPS])

    # -- user side ------------------------------------------------------------------------
    def _pick_topic(self, rng: random.Random, weights: Mapping[str, float] | None) -> Topic:
        topics = self.material.topics
        if not weights:
            return rng.choice(topics)
        return rng.choices(topics, weights=[max(weights.get(t.name, 1.0), 0.01) for t in topics])[0]

    def _with_persona(self, rng: random.Random, situation: str) -> str:
        if rng.random() < 0.5:
            return _join_persona(rng.choice(self.common.personas_intro), rng.choice(self.material.personas), situation)
        return situation

    def _user_turn(self, rng: random.Random, situation: str, question: str) -> str:
        return f"{self._with_persona(rng, situation)} {question}"

    def _emotion(self, rng: random.Random, user: str) -> str:
        detected = self.signals.emotion_of(user)
        if detected is not None:
            return detected
        return "neutral" if rng.random() < 0.25 else rng.choice(self._feelings)

    def _add_feeling(self, rng: random.Random, user: str, emotion: str) -> str:
        lines = self.common.emotions[emotion].user
        if not lines or self.signals.emotion_of(user) == emotion:
            return user
        feeling = rng.choice(lines)
        return f"{feeling} {user}" if feeling.endswith(":") or rng.random() < 0.5 else f"{user} {feeling}"

    # -- assistant side -------------------------------------------------------------------
    def _reply(
        self,
        rng: random.Random,
        emotion: str,
        advice: Sequence[str],
        topic: Topic,
        markers: set[EmpathyMarker],
        *,
        safety: CrisisKind | None = None,
    ) -> str:
        opening: list[str] = []
        if emotion != "neutral":
            opening.append(rng.choice(self.common.emotions[emotion].ack))
            markers.add("acknowledge_feeling")
        if rng.random() < 0.4 or not opening:
            opening.append(rng.choice(self.common.validations))
            markers.add("validate")
        body = list(advice)
        closing: list[str] = []
        if safety is not None:
            closing.append(rng.choice(self.common.safety_notes[REPLY_STYLE[safety]]))
            markers.add("crisis_resources")
        if rng.random() < 0.35:
            closing.append(rng.choice(self.common.encouragements))
            markers.add("encourage")
        referral_odds = 0.55 if self.domain.crisis_safety else 0.3
        if rng.random() < referral_odds:
            closing.append(self.material.referral)
            markers.add("refer_professional")
        if rng.random() < 0.2:
            closing.append(rng.choice(self.common.offers))
            markers.add("offer_support")
        closing.append(rng.choice(topic.followups))
        markers.add("ask_followup")
        return "\n\n".join(" ".join(part) for part in (opening, body, closing) if part)

    def _second_reply(
        self,
        rng: random.Random,
        follow: str,
        advice: Sequence[str],
        topic: Topic,
        markers: set[EmpathyMarker],
    ) -> str:
        feeling = self.signals.emotion_of(follow)
        if feeling is not None and self.common.emotions[feeling].ack:
            opener = rng.choice(self.common.emotions[feeling].ack)
            markers.add("acknowledge_feeling")
        else:
            opener = rng.choice(self.common.second_turn_openers)
        parts = [opener, " ".join(advice)]
        if rng.random() < 0.5:
            parts.append(rng.choice(self.common.encouragements))
            markers.add("encourage")
        if rng.random() < 0.4:
            parts.append(rng.choice(topic.followups))
            markers.add("ask_followup")
        return "\n\n".join(p for p in parts if p)

    def _crisis_sample(
        self,
        rng: random.Random,
        sample_id: str,
        system: str,
        user: str,
        kind: CrisisKind,
        split_key: str,
        topic: str | None,
    ) -> ConversationSample:
        replies = self.common.crisis_replies
        markers: list[EmpathyMarker] = ["acknowledge_feeling", "ask_followup", "crisis_resources"]
        style = REPLY_STYLE[kind]
        if style == "self_harm":
            r = replies.self_harm
            parts = [r.acknowledge, r.care, r.lines, r.connect, r.check]
            markers.append("refer_professional")
        elif style == "danger":
            d = replies.danger
            parts = [d.acknowledge, d.lines, d.safety, d.check]
        else:
            e = replies.medical_emergency
            parts = [e.acknowledge, e.meanwhile, e.limits, e.check]
        chosen = [rng.choice(options) for options in parts]
        reply = f"{replies.opening} {chosen[0]}\n\n" + " ".join(chosen[1:-1]) + f"\n\n{chosen[-1]}"
        return ConversationSample(
            id=sample_id,
            domain=self.domain.name,
            category=self.domain.category,
            messages=[
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=user),
                ChatMessage(role="assistant", content=reply),
            ],
            emotion="distressed",
            empathy_markers=sorted(markers),
            crisis=True,
            topic=topic,
            generator=self.name,
            split_key=split_key,
        )
