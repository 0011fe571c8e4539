"""Model QA measurements: llama.cpp perplexity, degenerate replies, load failures as failed checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from agents.llm.base_model import load_base_model, load_tokenizer, resolve_base_model
from agents.llm.chat_format import IGNORE, encode_conversation, load_conversations
from agents.quality_assurance.model_checks import ModelChecker, load_model_quality, repeated_4gram_share
from agents.quality_assurance.model_validation import gain_kept
from agents.text.signals import load_signals


def test_llama_cpp_perplexity_equals_the_torch_one(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path]
) -> None:
    _, evaluation = conversations
    base = resolve_base_model(str(tiny_gguf))
    tokenizer = load_tokenizer(base, model_cache)
    samples = [encode_conversation(tokenizer, m, max_tokens=512) for m in list(load_conversations(evaluation))[:4]]
    samples = [s for s in samples if s is not None]
    model = load_base_model(base, model_cache, dtype=torch.float32)
    total, count = 0.0, 0
    with torch.no_grad():
        for s in samples:
            logits = model(torch.tensor([s.input_ids]), use_cache=False).logits[0, :-1]
            labels = torch.tensor(s.labels[1:])
            keep = labels != IGNORE
            total += float(torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            count += int(keep.sum())
    checker = ModelChecker(settings=load_model_quality(), signals=load_signals(), n_ctx=1024)
    llm = checker.load("base_loads", tiny_gguf, logits_all=True)
    assert llm is not None
    assert checker.perplexity(llm, samples) == pytest.approx(math.exp(total / count), rel=1e-3)


def test_degenerate_replies_score_high() -> None:
    assert repeated_4gram_share("swe " * 40) > 0.9
    fine = "Drink water through the day, take short screen breaks, and see a doctor if the headaches get worse."
    assert repeated_4gram_share(fine) == 0.0
    assert repeated_4gram_share("short") == 0.0


def test_a_file_llama_cpp_cannot_load_is_a_failed_check_not_a_crash(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    checker = ModelChecker(settings=load_model_quality(), signals=load_signals(), n_ctx=256)
    assert checker.load("merged_loads", broken) is None
    (check,) = checker.checks
    assert check.name == "merged_loads" and not check.passed and "could not load" in check.detail


def test_the_merged_model_is_judged_by_the_share_of_the_gain_it_keeps() -> None:
    # Measured pairs (base, adapter, Q4_K_M merged): a 40-step CPU run and an 846-step GPU run.
    assert gain_kept(26.618, 8.218, 8.745) == pytest.approx(0.947, abs=1e-3)
    assert gain_kept(26.360, 1.190, 1.340) == pytest.approx(0.962, abs=1e-3)
    assert gain_kept(26.0, 8.0, 20.0) < 0.3  # a merge that lost the adapter
    assert gain_kept(10.0, 12.0, 11.0) == 1.0 and gain_kept(10.0, 12.0, 13.0) == 0.0  # no gain to keep
    assert load_model_quality().merged_gain_kept_min == 0.9
