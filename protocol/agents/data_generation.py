"""Tool models of the Data Generation agent."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocol._base import CatalogName, ToolModel
from protocol._tools import DatasetRef

__all__ = [
    "DEFAULT_CRISIS_FRACTION",
    "CombineInput",
    "CombineOutput",
    "DatasetPart",
    "DatasetSplits",
    "DatasetStats",
    "DatasetStatsInput",
    "GenerateInput",
    "GenerateOutput",
    "GeneratorInfo",
    "ListGeneratorsInput",
    "ListGeneratorsOutput",
    "TeacherSettings",
]

GeneratorName = Literal["compositional", "teacher"]

DEFAULT_CRISIS_FRACTION = 0.06
"""Share of crisis conversations a crisis-sensitive domain's data gets unless a job asks otherwise."""


class TeacherSettings(ToolModel):
    """Where the teacher LLM is: a local GGUF file, or an OpenAI-compatible endpoint."""

    gguf_path: str | None = Field(default=None, max_length=1024)
    """A GGUF model file run with llama-cpp-python."""
    base_url: str | None = Field(default=None, max_length=1024)
    """An OpenAI-compatible API root, e.g. ``http://localhost:8080/v1`` (llama-server, vLLM, Ollama)."""
    model: str = Field(default="default", max_length=200)
    """Model name sent to the endpoint."""
    api_key_env: str | None = Field(default=None, max_length=100)
    """Name of the environment variable holding the API key (keys never travel in messages)."""
    temperature: float = Field(default=0.8, ge=0, le=2)
    """Sampling temperature."""
    max_tokens: int = Field(default=700, ge=64, le=4096)
    """Longest completion per conversation."""


class GenerateInput(ToolModel):
    """Arguments of ``data_generation.generate``."""

    domain: CatalogName
    """The domain to generate for."""
    count: int = Field(default=1000, ge=1, le=200_000)
    """Samples wanted after filtering (training plus evaluation split)."""
    seed: int = Field(default=0, ge=0)
    """Same seed, same domain, same material: same dataset."""
    generator: GeneratorName = "compositional"
    """``compositional`` (offline default) or ``teacher`` (an LLM)."""
    teacher: TeacherSettings | None = None
    """Required for the teacher generator."""
    eval_fraction: float = Field(default=0.05, ge=0.0, le=0.5)
    """Share held out for evaluation (grouped by situation, so evaluation situations are unseen)."""
    max_rounds: int = Field(default=6, ge=1, le=50)
    """Generate-filter rounds before giving up on reaching ``count``."""
    multi_turn_fraction: float = Field(default=0.35, ge=0.0, le=1.0)
    """Share of two-exchange conversations."""
    crisis_fraction: float = Field(default=DEFAULT_CRISIS_FRACTION, ge=0.0, le=0.5)
    """Share of crisis conversations for crisis-sensitive domains (others have none)."""
    filter: bool = True
    """Send each batch through quality_assurance.filter_dataset (the feedback loop)."""


class DatasetStats(ToolModel):
    """Measured properties of a dataset."""

    samples: int
    """Conversations in the file."""
    multi_turn: int
    """Conversations with more than one user turn."""
    crisis: int
    """Conversations with a crisis message."""
    emotions: dict[str, int]
    """Conversations per user-emotion label."""
    topics: dict[str, int]
    """Conversations per topic."""
    mean_words_user: float
    """Mean words per user turn."""
    mean_words_assistant: float
    """Mean words per assistant turn."""
    distinct_3grams: int
    """Distinct word 3-grams in the dialogue text (estimated with HyperLogLog)."""
    distinct_3gram_ratio: float
    """Distinct word 3-grams / all word 3-grams of the dialogue text; falls as a dataset grows."""


class DatasetSplits(ToolModel):
    """A training split and its held-out evaluation split, written and stored."""

    dataset: DatasetRef
    """Training split (JSONL)."""
    eval_dataset: DatasetRef
    """Held-out evaluation split (JSONL); training never sees it."""
    path: str
    """Where the training split was written (``data/training/{category}/{domain}_training_data.jsonl``;
    ``_category_training_data.jsonl`` for a category)."""
    eval_path: str
    """Where the evaluation split was written."""
    stats: DatasetStats
    """Stats of the training split."""
    eval_samples: int
    """Samples in the evaluation split."""


class GenerateOutput(DatasetSplits):
    """Result of ``data_generation.generate``."""

    generated: int
    """Samples generated over all rounds."""
    kept: int
    """Samples that passed QA (before truncating to ``count``)."""
    pass_rate: float
    """kept / generated."""
    near_duplicate_rate: float
    """Share of generated samples rejected as near-duplicates."""
    rejections: dict[str, int]
    """Rejections per rule, over all rounds."""
    rounds: int
    """Generate-filter rounds used."""
    reached_target: bool
    """Whether ``count`` samples passed within ``max_rounds``."""


class ListGeneratorsInput(ToolModel):
    """Arguments of ``data_generation.list_generators`` (none)."""


class GeneratorInfo(ToolModel):
    """One generator."""

    name: GeneratorName
    """Generator name for ``generate``."""
    description: str
    """What it does."""
    available: bool
    """Whether it can run here now."""
    requirement: str | None
    """What it needs when it is not available."""


class ListGeneratorsOutput(ToolModel):
    """Result of ``data_generation.list_generators``."""

    generators: list[GeneratorInfo]
    """Every generator."""


class DatasetStatsInput(ToolModel):
    """Arguments of ``data_generation.dataset_stats``."""

    dataset: DatasetRef
    """JSONL of conversations."""


class DatasetPart(ToolModel):
    """One domain's generated splits, as ``generate`` returned them."""

    domain: CatalogName
    """The domain the data is for."""
    dataset: DatasetRef
    """Its training split."""
    eval_dataset: DatasetRef
    """Its evaluation split."""


class CombineInput(ToolModel):
    """Arguments of ``data_generation.combine``."""

    scope: Literal["category", "universal"]
    """A category model or the universal one."""
    target: CatalogName
    """The category, or ``universal``."""
    parts: list[DatasetPart] = Field(min_length=2, max_length=500)
    """Every domain's data, one part per domain of the scope."""


class CombineOutput(DatasetSplits):
    """Result of ``data_generation.combine``: splits over all the domains, interleaved in proportion."""

    samples_per_domain: dict[str, int]
    """Training samples each domain contributed."""
