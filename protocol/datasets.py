"""The training-data format agents exchange through artifacts: one conversation per JSONL line."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from protocol._base import ToolModel

__all__ = ["EMOTIONS", "ChatMessage", "ConversationSample", "EmpathyMarker", "Emotion"]

Emotion = Literal[
    "neutral",
    "curious",
    "confused",
    "anxious",
    "stressed",
    "overwhelmed",
    "frustrated",
    "sad",
    "lonely",
    "afraid",
    "hopeful",
    "excited",
    "distressed",
]
"""The user's emotion, from a fixed label set (``distressed``: a crisis message)."""

EMOTIONS: tuple[str, ...] = Emotion.__args__  # type: ignore[attr-defined]

EmpathyMarker = Literal[
    "acknowledge_feeling",
    "validate",
    "encourage",
    "offer_support",
    "ask_followup",
    "refer_professional",
    "crisis_resources",
]
"""Empathy moves present in the assistant's replies."""


class ChatMessage(ToolModel):
    """One turn."""

    role: Literal["system", "user", "assistant"]
    """Who speaks."""
    content: Annotated[str, Field(min_length=1, max_length=8000)]
    """What is said."""


class ConversationSample(ToolModel):
    """A chat-format training conversation with its labels."""

    id: Annotated[str, Field(min_length=1, max_length=120)]
    """Unique within a dataset; stable for a given generator, domain, seed and index."""
    domain: str
    """Domain name."""
    category: str
    """The domain's category."""
    messages: Annotated[list[ChatMessage], Field(min_length=3, max_length=41)]
    """System prompt, then alternating user and assistant turns, ending with the assistant."""
    emotion: Emotion
    """The user's emotion."""
    empathy_markers: list[EmpathyMarker]
    """Empathy moves in the replies."""
    crisis: bool
    """Whether a user turn signals self-harm or an emergency."""
    topic: str | None = None
    """The domain topic the conversation is about, when the generator knows it."""
    generator: str
    """Which generator wrote it."""
    split_key: str | None = None
    """Samples sharing a split key always land in the same split (train or eval)."""

    @model_validator(mode="after")
    def _shape(self) -> ConversationSample:
        roles = [m.role for m in self.messages]
        if roles[0] != "system":
            raise ValueError("the first message must be the system prompt")
        turns = roles[1:]
        expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
        if turns != expected or turns[-1] != "assistant":
            raise ValueError("after the system prompt, turns must alternate user/assistant and end with assistant")
        return self

    def turns(self, role: Literal["system", "user", "assistant"]) -> list[str]:
        return [m.content for m in self.messages if m.role == role]

    def dialogue_text(self) -> str:
        """User and assistant text, without the (shared) system prompt."""
        return "\n".join(m.content for m in self.messages if m.role != "system")
