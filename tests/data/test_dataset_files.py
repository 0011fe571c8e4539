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
