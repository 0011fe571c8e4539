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

__all__ = ["PackedBatch", "collate_rows", "pack_rows", "padded_rows"]


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


def collate_rows(
    rows: Sequence[Sequence[int]], samples: Sequence[EncodedSample], *, row_len: int, pad_id: int, packed: bool
) -> PackedBatch:
    """Tensors for a micro-batch of rows.

    Packed rows carry per-sequence position ids and no attention mask; unpacked rows are padded to
    the longest row with an attention mask, as a plain Trainer would.
    """
    import torch

    width = row_len if packed else max(sum(len(samples[i]) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for index in row:
            sample = samples[index]
            n = min(len(sample), row_len - at)
            ids[r, at : at + n] = torch.tensor(sample.input_ids[:n])
            labels[r, at : at + n] = torch.tensor(sample.labels[:n])
            positions[r, at : at + n] = torch.arange(n)
            at += n
        mask[r, :at] = 1
        if at < width:
            positions[r, at:] = torch.arange(width - at)  # the tail is a sequence of its own
        tokens += at
    return PackedBatch(ids, labels, positions, None if packed else mask, tokens)
