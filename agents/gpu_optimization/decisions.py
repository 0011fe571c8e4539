"""The crisis decision as a loss of its own: does a reply to this message open as a crisis reply?

A crisis reply in the training data opens with one fixed sentence, so a model decides at its
reply's start whether a message is a crisis. Language-model loss teaches that decision from one
opening per crisis conversation (a few dozen in a CPU job), and nothing pushes the opening down
after an ordinary message that merely sounds alarming. Here each step also sees short prompts —
system prompt and one user message, followed by the crisis opening — labelled crisis or not: the
crisis detector's labelled messages (crises of every kind, and ordinary messages that share their
words) and the training data's own first user messages (its ordinary questions above all: without
them the demo model learnt "a health question, so a crisis" and opened 71% of ordinary healthcare
replies with the emergency sentence). The loss is a binary cross-entropy on the decision, the
probability of the opening's first ``OPENING_LENGTH`` tokens: up after a crisis, down after
anything else. After a crisis the rest of the opening sentence is taught as well: that is where
the help numbers are, and a model that opens right but invents the number (measured: "911 in the
US or 985 in the UK") gives no real help. The first ``OPENING_LENGTH`` tokens, not the first token:
a first token such as "Please" also begins ordinary replies, and a loss on it alone teaches a model
to say "Please" and then anything (measured: the demo's crisis help fell from 62% to 19%). No
reply is imposed on ordinary messages; they keep the replies the language-model loss teaches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.gpu_optimization.packing import pack_rows
from agents.llm.chat_format import IGNORE, EncodedSample

if TYPE_CHECKING:
    import torch

__all__ = [
    "CRISIS_SHARE",
    "LONGEST_OPENING",
    "OPENING_LENGTH",
    "DecisionBatch",
    "DecisionSet",
    "crisis_opening",
    "decision_loss",
]

CRISIS_SHARE = 1 / 3
"""Crises among a step's prompts: ordinary messages (the domain's questions, and ones that sound
alarming: idioms, grief, past emergencies) are the many-sided, harder half of the decision."""


OPENING_LENGTH = 8
"""Reply tokens read as the decision: enough to reach past words that also begin ordinary replies."""

LONGEST_OPENING = 64
"""At most this many tokens of the opening sentence are taught after a crisis."""

_SHARED = 0.9
"""The opening runs on while this share of the crisis replies that open alike go on alike."""


def crisis_opening(
    crisis_replies: Sequence[EncodedSample], length: int = OPENING_LENGTH, longest: int = LONGEST_OPENING
) -> tuple[int, ...] | None:
    """The reply tokens most of the training data's crisis conversations open with.

    The most common first ``length`` tokens, continued for as long as nearly all the replies that
    open with them go on alike (the rest of a fixed opening sentence, up to ``longest`` tokens).
    """
    replies: list[list[int]] = []
    for sample in crisis_replies:
        start = next((p for p, label in enumerate(sample.labels) if label != IGNORE), None)
        if start is not None and len(sample.labels) >= start + length:
            end = next((p for p in range(start, len(sample.labels)) if sample.labels[p] == IGNORE), len(sample.labels))
            replies.append(list(sample.labels[start:end]))
    if not replies:
        return None
    first, _ = Counter(tuple(r[:length]) for r in replies).most_common(1)[0]
    opening, alike = list(first), [r for r in replies if tuple(r[:length]) == first]
    while (at := len(opening)) < longest:
        following = Counter(r[at] for r in alike if len(r) > at)
        if not following:
            break
        token, count = following.most_common(1)[0]
        if count < _SHARED * len(alike):
            break
        opening.append(token)
        alike = [r for r in alike if len(r) > at and r[at] == token]
    return tuple(opening)


@dataclass(frozen=True, slots=True)
class DecisionBatch:
    """Prompts packed side by side in rows (positions restart at each prompt, as in training rows)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    rows: torch.Tensor
    """(prompts, opening length): the row of each position that predicts an opening token..."""
    columns: torch.Tensor
    """...and its column."""
    crisis: torch.Tensor
    """1.0 for a crisis message, 0.0 for an ordinary one."""


class DecisionSet:
    """Encoded prompts with their labels, and the prompts of each optimizer step.

    A step's prompts depend only on (seed, step) and balance crises and ordinary messages, so a
    resumed run sees the prompts it would have seen.
    """

    def __init__(
        self,
        tokenizer: Any,
        systems: Sequence[str],
        crises: Sequence[str],
        ordinary: Sequence[str],
        opening: Sequence[int],
        *,
        seed: int,
        max_tokens: int,
    ) -> None:
        if not systems or not crises or not ordinary:
            raise ValueError("the decision set needs system prompts, crisis messages and ordinary messages")
        rng = np.random.default_rng((seed, 7))
        self.opening = list(opening)
        self.seed, self.row_len = seed, max_tokens
        prompt_tokens = max_tokens - len(self.opening)
        self.crises = [
            self._encode(tokenizer, systems[int(rng.integers(len(systems)))], m, prompt_tokens) + self.opening
            for m in crises
        ]
        self.ordinary = [
            self._encode(tokenizer, systems[int(rng.integers(len(systems)))], m, prompt_tokens) + self.opening
            for m in ordinary
        ]
        self.pad_id = int(tokenizer.pad_token_id)

    @staticmethod
    def _encode(tokenizer: Any, system: str, message: str, max_tokens: int) -> list[int]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": message}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids: list[int] = tokenizer(text, add_special_tokens=False).input_ids
        return ids[-max_tokens:]  # the generation prompt's end is what the decision reads from

    def for_step(self, step: int, size: int) -> DecisionBatch:
        """``size`` prompts, ``CRISIS_SHARE`` of them crises and the rest ordinary messages."""
        import torch

        rng = np.random.default_rng((self.seed, 11, step))
        n = max(1, round(size * CRISIS_SHARE))
        picked = [(self.crises[i], 1.0) for i in rng.choice(len(self.crises), n, replace=n > len(self.crises))]
        picked += [
            (self.ordinary[i], 0.0)
            for i in rng.choice(len(self.ordinary), size - n, replace=size - n > len(self.ordinary))
        ]
        layout = pack_rows([len(ids) for ids, _ in picked], self.row_len)
        width = max(sum(len(picked[i][0]) for i in row) for row in layout)
        input_ids = torch.full((len(layout), width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((len(layout), width), dtype=torch.long)
        rows, columns, crisis = [], [], []
        k = len(self.opening)
        for r, row in enumerate(layout):
            at = 0
            for index in row:
                ids, label = picked[index]
                input_ids[r, at : at + len(ids)] = torch.tensor(ids)
                positions[r, at : at + len(ids)] = torch.arange(len(ids))
                at += len(ids)
                rows.append([r] * k)
                columns.append(list(range(at - k - 1, at - 1)))  # the positions that predict the opening
                crisis.append(label)
            positions[r, at:] = torch.arange(width - at)  # the tail is a sequence of its own
        return DecisionBatch(input_ids, positions, torch.tensor(rows), torch.tensor(columns), torch.tensor(crisis))


def decision_loss(
    model: Any, batch: DecisionBatch, opening: Sequence[int], device: str, autocast: torch.dtype | None
) -> torch.Tensor:
    """Mean binary cross-entropy of the decision (P of the opening's first ``OPENING_LENGTH`` tokens)
    against the labels, and after a crisis the rest of the opening's cross-entropy."""
    import contextlib

    import torch

    inner: Any = model.get_base_model()
    context = torch.autocast(device_type=device, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with context:
        hidden = inner.model(
            input_ids=batch.input_ids.to(device), position_ids=batch.position_ids.to(device), use_cache=False
        ).last_hidden_state
        logits = inner.lm_head(hidden[batch.rows.to(device), batch.columns.to(device)])
    targets = torch.tensor(list(opening), device=device).expand(len(logits), -1)
    log_p = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0]
    # log(1 - p) from log p without cancellation where p is near 1
    log_not_decided = torch.log((-torch.expm1(log_p[:, :OPENING_LENGTH].sum(-1))).clamp_min(1e-12))
    crisis = batch.crisis.to(device)
    return -(crisis * log_p.sum(-1) + (1 - crisis) * log_not_decided).mean()
