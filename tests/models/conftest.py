"""Model-test fixtures: conversations and a trained adapter shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.gpu_optimization.trainer import run_training
from agents.llm.adapter_file import AdapterFile, read_adapter
from agents.text.signals import load_signals
from runtime import load_catalog
from tests.models.training_helpers import tiny_run


def write_conversations(path: Path, domain: str, start: int, count: int, seed: int = 0) -> Path:
    """Compositional conversations (no QA filter) as JSONL."""
    catalog = load_catalog()
    d = catalog.domain(domain)
    generator = CompositionalGenerator(d, load_material(d.category, d.name), load_common(), load_signals())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + count):
            f.write(generator.sample(seed, i).model_dump_json(exclude_none=True) + "\n")
    return path


@pytest.fixture(scope="session")
def conversations(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(train, eval) JSONL for general_health: 160 and 24 conversations."""
    folder = tmp_path_factory.mktemp("conversations")
    return (
        write_conversations(folder / "train.jsonl", "general_health", 0, 160),
        write_conversations(folder / "eval.jsonl", "general_health", 10_000, 24),
    )


@pytest.fixture(scope="session")
def trained_adapter(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> AdapterFile:
    """A LoRA adapter trained 8 steps on the tiny model."""
    train, _ = conversations
    run = tiny_run(tiny_gguf, model_cache, tmp_path_factory.mktemp("run"), train, None, max_steps=8)
    return read_adapter(run_training(run).adapter_path)
