"""Sequence packing: whole conversations laid side by side in fixed-length rows.

Each row holds several conversations; position ids restart at 0 for each one, which
transformers reads as separate sequences (block-diagonal causal attention), so packed
conversations never attend to each other and no compute is spent on padding beyond a
row's short tail.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents.llm.chat_format import IGNORE, EncodedSample

if TYPE_CHECKING:
    import torch

__all__ = ["OPENING_TOKENS", "PackedBatch", "collate_rows", "pack_rows", "padded_rows", "reply_starts"]


def pack_rows(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Best-fit decreasing: sample indices per row, rows no longer than ``row_len``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, row index), sorted
    for index in order:
        need = min(lengths[index], row_len)
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            space, row = free.pop(at)
            rows[row].append(index)
            space -= need
        else:
            row, space = len(rows), row_len - need
            rows.append([index])
        if space > 0:
            bisect.insort(free, (space, row))
    return rows


def padded_rows(count: int) -> list[list[int]]:
    """One sample per row: the layout of an unpacked baseline (the benchmark compares the two)."""
    return [[i] for i in range(count)]


@dataclass(frozen=True, slots=True)
class PackedBatch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    tokens: int
    """Real (non-padding) tokens in the batch."""
    weights: torch.Tensor | None = None
    """Loss weight per label position (``None``: all 1); see ``collate_rows``' ``opening_weight``."""

    @property
    def loss_weight(self) -> float:
        """Total weight of the loss-carrying tokens (their count without weights)."""
        keep = self.labels[:, 1:] != IGNORE
        return float(keep.sum()) if self.weights is None else float(self.weights[:, 1:][keep].sum())


OPENING_TOKENS = 3
"""A reply's first tokens, where a model decides what kind of reply it writes (a crisis reply opens
with one fixed sentence, ``crisis_replies.opening`` in the generator's material)."""


def reply_starts(labels: Sequence[int]) -> list[int]:
    """Positions of the first loss-carrying token of each reply."""
    return [p for p, label in enumerate(labels) if label != IGNORE and (p == 0 or labels[p - 1] == IGNORE)]


def collate_rows(
    rows: Sequence[Sequence[int]],
    samples: Sequence[EncodedSample],
    *,
    row_len: int,
    pad_id: int,
    packed: bool,
    opening_weight: float = 1.0,
) -> PackedBatch:
    """Tensors for a micro-batch of rows.

    Packed rows carry per-sequence position ids and no attention mask; unpacked rows are padded to
    the longest row with an attention mask, as a plain Trainer would. With ``opening_weight`` above
    1 the first ``OPENING_TOKENS`` of each reply weigh that much in the loss: whether a message is
    a crisis is learnt from one decision per conversation, which the reply's other hundred-odd
    tokens otherwise drown out.
    """
    import torch

    width = row_len if packed else max(sum(len(samples[i]) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    weights = torch.ones((len(rows), width)) if opening_weight != 1.0 else None
    tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for index in row:
            sample = samples[index]
            n = min(len(sample), row_len - at)
            ids[r, at : at + n] = torch.tensor(sample.input_ids[:n])
            labels[r, at : at + n] = torch.tensor(sample.labels[:n])
            positions[r, at : at + n] = torch.arange(n)
            if weights is not None:
                for start in reply_starts(sample.labels[:n]):
                    weights[r, at + start : at + min(start + OPENING_TOKENS, n)] = opening_weight
            at += n
        mask[r, :at] = 1
        if at < width:
            positions[r, at:] = torch.arange(width - at)  # the tail is a sequence of its own
        tokens += at
    return PackedBatch(ids, labels, positions, None if packed else mask, tokens, weights)
