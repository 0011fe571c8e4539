"""Chat-template encoding with assistant-only labels, and packing that keeps conversations apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.gpu_optimization.packing import collate_rows, pack_rows, reply_starts
from agents.llm.base_model import load_base_model, load_tokenizer, resolve_base_model
from agents.llm.chat_format import IGNORE, EncodedSample, TemplateMismatch, encode_conversation

MESSAGES = [
    {"role": "system", "content": "You are a careful health assistant."},
    {"role": "user", "content": "I keep waking up with a headache."},
    {"role": "assistant", "content": "That sounds tiring. Drink water and see a doctor if it persists."},
    {"role": "user", "content": "Could it be my pillow?"},
    {"role": "assistant", "content": "It could be; a neck that bends all night can cause morning headaches."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_gguf: Path, model_cache: Path):  # type: ignore[no-untyped-def]
    return load_tokenizer(resolve_base_model(str(tiny_gguf)), model_cache)


def test_only_assistant_replies_and_their_end_of_turn_carry_loss(tokenizer) -> None:  # type: ignore[no-untyped-def]
    encoded = encode_conversation(tokenizer, MESSAGES, max_tokens=1024)
    assert encoded is not None
    trained = tokenizer.decode(
        [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE]
    )
    assert trained == (
        "That sounds tiring. Drink water and see a doctor if it persists.<|im_end|>\n"
        "It could be; a neck that bends all night can cause morning headaches.<|im_end|>\n"
    )
    assert "headache." not in trained.split("persists")[0]  # the user's words are context only
    assert encoded.labels[0] == IGNORE


def test_truncation_and_untrainable_conversations(tokenizer) -> None:  # type: ignore[no-untyped-def]
    short = encode_conversation(tokenizer, MESSAGES, max_tokens=20)
    assert short is None  # the cut falls before the first reply: nothing to learn from
    cut = encode_conversation(tokenizer, MESSAGES, max_tokens=60)
    assert cut is not None and len(cut) == 60


def test_a_template_that_does_not_render_by_prefix_is_refused(tokenizer) -> None:  # type: ignore[no-untyped-def]
    odd = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    odd.chat_template = "{% for m in messages|reverse %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TemplateMismatch):
        encode_conversation(odd, MESSAGES, max_tokens=1024)


def test_best_fit_packing_fills_rows_and_keeps_every_sample() -> None:
    lengths = [300, 200, 180, 120, 90, 60, 500, 20, 20]
    rows = pack_rows(lengths, 512)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 512 for row in rows)
    assert len(rows) == 3  # 1490 tokens need at least 3 rows of 512


def test_packed_conversations_do_not_attend_to_each_other(tiny_gguf: Path, model_cache: Path) -> None:
    """Logits of a conversation are the same alone and packed behind another one."""
    import torch

    base = resolve_base_model(str(tiny_gguf))
    model = load_base_model(base, model_cache, dtype=torch.float32)
    a = EncodedSample(list(range(100, 140)), [IGNORE] * 40)
    b = EncodedSample(list(range(300, 330)), [IGNORE] * 30)
    packed = collate_rows([[0, 1]], [a, b], row_len=96, pad_id=2, packed=True)
    alone = collate_rows([[1]], [a, b], row_len=96, pad_id=2, packed=True)
    assert packed.attention_mask is None and packed.tokens == 70
    assert packed.position_ids[0, 40:43].tolist() == [0, 1, 2]
    with torch.no_grad():
        # Without a KV cache, transformers reads restarting position ids as separate sequences.
        together = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits
        single = model(input_ids=alone.input_ids, position_ids=alone.position_ids, use_cache=False).logits
        leaky = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=True).logits
    torch.testing.assert_close(together[0, 40:70], single[0, :30], atol=1e-4, rtol=1e-4)
    # The check can fail: with a cache the mask is plain causal and b sees a.
    assert not torch.allclose(leaky[0, 40:70], single[0, :30], atol=1e-2)


def test_unpacked_rows_are_padded_with_a_mask() -> None:
    a = EncodedSample([5] * 10, [5] * 10)
    b = EncodedSample([6] * 4, [6] * 4)
    batch = collate_rows([[0], [1]], [a, b], row_len=64, pad_id=2, packed=False)
    assert batch.input_ids.shape == (2, 10)
    assert batch.attention_mask is not None and batch.attention_mask[1].tolist() == [1] * 4 + [0] * 6
    assert batch.labels[1, 4:].tolist() == [IGNORE] * 6


def test_the_opening_tokens_of_every_reply_carry_the_opening_weight() -> None:
    """Each reply's first OPENING_TOKENS label positions weigh ``opening_weight``; the rest, 1."""
    # Two replies in one conversation (prompt, reply, user turn, reply), then a second conversation.
    a = EncodedSample(
        list(range(20)), [IGNORE] * 4 + list(range(4, 10)) + [IGNORE] * 5 + list(range(15, 17)) + [IGNORE] * 3
    )
    b = EncodedSample(list(range(8)), [IGNORE] * 3 + list(range(3, 8)))
    batch = collate_rows([[0, 1]], [a, b], row_len=32, pad_id=2, packed=True, opening_weight=5.0)
    assert batch.weights is not None
    labelled = batch.labels[0] != IGNORE
    heavy = [p for p, w in enumerate(batch.weights[0].tolist()) if w == 5.0 and labelled[p]]
    assert heavy == [4, 5, 6, 15, 16, 23, 24, 25]  # a two-token reply: both tokens
    assert reply_starts(a.labels) == [4, 15]
    # Loss-carrying weight: the label at position 0 is never predicted, so it never counts.
    assert batch.loss_weight == 8 * 5.0 + (6 + 2 + 5 - 8) * 1.0
    plain = collate_rows([[0, 1]], [a, b], row_len=32, pad_id=2, packed=True)
    assert plain.weights is None and plain.loss_weight == 13


def test_decision_prompts_are_balanced_end_in_the_opening_and_repeat_on_resume(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from agents.gpu_optimization.decisions import DecisionSet, crisis_opening

    opening = tokenizer("Call 999 now.", add_special_tokens=False).input_ids
    crises = [f"crisis message {i}" for i in range(5)]
    ordinary = [f"ordinary message {i}" for i in range(30)]
    prompts = DecisionSet(tokenizer, ["Be kind.", "Be brief."], crises, ordinary, opening, seed=3, max_tokens=512)
    batch = prompts.for_step(7, 12)
    assert sorted(batch.crisis.tolist()) == [0.0] * 8 + [1.0] * 4  # a third crises, drawn again if too few
    assert batch.input_ids.shape[0] == 1  # twelve short prompts share one packed row
    starts = (batch.position_ids[0] == 0).nonzero().flatten().tolist()
    for rows, columns, crisis in zip(batch.rows.tolist(), batch.columns.tolist(), batch.crisis.tolist(), strict=True):
        row, first = rows[0], columns[0]
        start = max(s for s in starts if s <= first)
        prompt = tokenizer.decode(batch.input_ids[row, start : first + 1].tolist())
        assert prompt.startswith("<|im_start|>system\nBe ") and prompt.endswith("<|im_start|>assistant\n")
        assert ("crisis message" in prompt) == bool(crisis)
        # each reading position predicts the next opening token
        assert [int(batch.input_ids[row, c + 1]) for c in columns] == opening
    again = prompts.for_step(7, 12)  # a resumed run sees the same prompts at the same step
    assert again.input_ids.equal(batch.input_ids) and not prompts.for_step(8, 12).input_ids.equal(batch.input_ids)

    a = EncodedSample([1, 2, 3, 4, 5], [IGNORE, IGNORE, 9, 5, 4])
    b = EncodedSample([1, 2, 3, 4], [IGNORE, 9, 5, 4])
    c = EncodedSample([1, 2, 3, 4], [IGNORE, 9, 6, 4])
    assert crisis_opening([a, b, c], length=3) == (9, 5, 4) and crisis_opening([], length=3) is None
    assert crisis_opening([EncodedSample([1, 2], [IGNORE, 9])], length=3) is None  # too short to open with it
    # The opening runs on while the replies that open alike go on alike: a fixed sentence, then
    # replies of their own; a reply's turn ends where its labels do.
    fixed = [EncodedSample([0] * 8, [IGNORE, 9, 5, 4, 7, tail, IGNORE, IGNORE]) for tail in (1, 2, 3)]
    other = EncodedSample([0] * 6, [IGNORE, 9, 6, 4, 7, 1])
    assert crisis_opening([*fixed, other], length=2) == (9, 5, 4, 7)
    assert crisis_opening([*fixed, other], length=2, longest=3) == (9, 5, 4)
    assert crisis_opening(fixed[:1], length=2) == (9, 5, 4, 7, 1)
