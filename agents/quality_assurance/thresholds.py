"""Data-QA thresholds per category, from ``configs/quality.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime import load_config

__all__ = ["DataThresholds", "load_thresholds"]


class DataThresholds(BaseModel):
    """The limits one category's data must meet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_words_user: int = Field(ge=1)
    max_words_user: int = Field(ge=1)
    min_words_assistant: int = Field(ge=1)
    max_words_assistant: int = Field(ge=1)
    max_turns: int = Field(ge=2)
    near_duplicate_jaccard: float = Field(gt=0, le=1)
    minhash_permutations: int = Field(ge=16, le=512)
    relevance_min: float = Field(ge=-1, le=1)
    relevance_top_k: int = Field(ge=1)
    coherence_max_better: float = Field(gt=0, le=1)
    pii: Literal["reject", "scrub"]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: dict[str, Any]
    categories: dict[str, dict[str, Any]] = {}


def load_thresholds(category: str, directory: Path | None = None) -> DataThresholds:
    """Thresholds for ``category``: the defaults overlaid with the category's entries."""
    spec = load_config(_File, directory, "quality.yaml")
    return DataThresholds.model_validate({**spec.defaults, **spec.categories.get(category, {})})
