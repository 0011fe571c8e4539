"""Assembling kept batches into training and evaluation splits."""

from __future__ import annotations

import json
from pathlib import Path

from agents.data_generation.dataset_files import assemble


def _batch(path: Path, count: int) -> Path:
    lines = [json.dumps({"id": f"s{i}", "split_key": f"topic:{i % 4}"}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_small_dataset_still_holds_out_an_evaluation_set(tmp_path: Path) -> None:
    source = _batch(tmp_path / "kept.jsonl", 10)
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    n_train, n_eval = assemble([source], count=10, eval_fraction=0.05, train_path=train, eval_path=evaluation)
    assert n_eval >= 1 and n_train + n_eval == 10
    held = {json.loads(line)["split_key"] for line in evaluation.read_text().splitlines()}
    trained = {json.loads(line)["split_key"] for line in train.read_text().splitlines()}
    assert not held & trained  # whole situations go to evaluation

    n_train, n_eval = assemble([source], count=10, eval_fraction=0.0, train_path=train, eval_path=evaluation)
    assert (n_train, n_eval) == (10, 0)


def test_opening_only_samples_always_train_and_never_share_a_key_with_evaluation(tmp_path: Path) -> None:
    """Evaluation measures whole replies; an opening of a message held out would leak it into training."""
    lines = [json.dumps({"id": f"w{i}", "split_key": f"crisis:{i % 10}"}) for i in range(40)]
    lines += [json.dumps({"id": f"o{i}", "split_key": f"crisis:{i % 20}", "opening_only": True}) for i in range(40)]
    source = tmp_path / "kept.jsonl"
    source.write_text("\n".join(lines) + "\n")
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    n_train, n_eval = assemble([source], count=80, eval_fraction=0.2, train_path=train, eval_path=evaluation)
    assert n_train + n_eval <= 80
    held = [json.loads(line) for line in evaluation.read_text().splitlines()]
    trained = [json.loads(line) for line in train.read_text().splitlines()]
    assert n_eval == len(held) >= 8 and not any(r.get("opening_only") for r in held)
    held_keys = {r["split_key"] for r in held}
    assert not held_keys & {r["split_key"] for r in trained}
    dropped = sum(1 for i in range(40) if f"crisis:{i % 20}" in held_keys)
    assert sum(bool(r.get("opening_only")) for r in trained) == 40 - dropped
