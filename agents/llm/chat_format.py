"""Conversations → token ids with loss on assistant tokens only, through the model's chat template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import InvalidParams, MeetaraError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "IGNORE",
    "EncodedSample",
    "TemplateMismatch",
    "encode_conversation",
    "load_conversations",
    "load_labelled_conversations",
]

IGNORE = -100
"""Label of a token that carries no loss (the cross-entropy ``ignore_index``)."""


class TemplateMismatch(MeetaraError):
    """The chat template renders a conversation's prefix differently from the conversation's start."""


@dataclass(frozen=True, slots=True)
class EncodedSample:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], *, prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    assert isinstance(text, str)
    return text


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant reply.

    A span runs from the end of the generation prompt to the end of the rendered reply, so it
    includes the end-of-turn token: the model learns to stop.
    """
    text = _render(tokenizer, messages, prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1], prompt=False)
        if not text.startswith(before) or not text.startswith(through) or len(through) <= len(before):
            raise TemplateMismatch("the chat template does not render conversations prefix by prefix")
        spans.append((len(before), len(through)))
    return text, spans


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], *, max_tokens: int
) -> EncodedSample | None:
    """Token ids and labels (assistant tokens keep their id, everything else is ``IGNORE``).

    Longer conversations are cut at ``max_tokens``; ``None`` when nothing trainable is left.
    """
    text, spans = assistant_spans(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoding["input_ids"][:max_tokens]
    offsets: list[tuple[int, int]] = encoding["offset_mapping"][: len(ids)]
    labels = [IGNORE] * len(ids)
    span = 0
    for position, (start, _end) in enumerate(offsets):
        while span < len(spans) and start >= spans[span][1]:
            span += 1
        if span < len(spans) and spans[span][0] <= start:
            labels[position] = ids[position]
    if all(label == IGNORE for label in labels[1:]):
        return None
    return EncodedSample(input_ids=ids, labels=labels)


def load_conversations(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The ``messages`` of each JSONL conversation."""
    for messages, _crisis in load_labelled_conversations(path):
        yield messages


def load_labelled_conversations(path: Path) -> Iterator[tuple[list[dict[str, Any]], bool]]:
    """Each JSONL conversation's ``messages`` and its ``crisis`` label."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InvalidParams(f"{path.name} line {number} is not a conversation") from None
            yield messages, bool(record.get("crisis", False))
