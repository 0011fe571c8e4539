"""Tool models of the Data Generation agent."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from protocol._base import CatalogName, ToolModel
from protocol._tools import DatasetRef

__all__ = [
    "DEFAULT_CRISIS_FRACTION",
    "CheckTeacherInput",
    "CheckTeacherOutput",
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
    "GeneratorName",
    "TeacherSettings",
    "TeacherUsage",
]

GeneratorName = Literal["compositional", "teacher", "mixed"]
"""``compositional`` (offline, from configs), ``teacher`` (an LLM writes each conversation) or ``mixed``
(an LLM rewrites each compositional draft in fresh words)."""

_API_KEY_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*_API_KEY")

DEFAULT_CRISIS_FRACTION = 0.06
"""Share of crisis conversations a crisis-sensitive domain's data gets unless a job asks otherwise."""


class TeacherSettings(ToolModel):
    """Where the teacher LLM is (a local GGUF file, or an OpenAI-compatible endpoint) and how to call it."""

    gguf_path: str | None = Field(default=None, max_length=1024)
    """A GGUF model file run with llama-cpp-python."""
    base_url: str | None = Field(default=None, max_length=1024)
    """An OpenAI-compatible API root, e.g. ``http://localhost:8080/v1`` (llama-server, vLLM, Ollama)."""
    model: str = Field(default="default", max_length=200)
    """Model name sent to the endpoint."""
    api_key_env: str | None = Field(default=None, max_length=100)
    """Name of the environment variable holding the API key (keys never travel in messages): it must end
    in ``_API_KEY`` and not start with ``MEETARA_``, so a caller cannot have the agent send another of
    its secrets (the broker password, the gateway token) to an endpoint the caller names."""
    temperature: float = Field(default=0.8, ge=0, le=2)
    """Sampling temperature."""
    max_tokens: int = Field(default=1024, ge=64, le=4096)
    """Longest completion per conversation."""
    concurrency: int = Field(default=4, ge=1, le=64)
    """Requests in flight at once (a GGUF file runs one at a time)."""
    requests_per_minute: float | None = Field(default=None, gt=0)
    """Most requests started per minute; ``None``: no limit."""
    max_retries: int = Field(default=5, ge=0, le=20)
    """Retries of a request that met a 429, a 5xx, a timeout or a connection error (exponential backoff)."""
    timeout_s: float = Field(default=300.0, gt=0, le=3600)
    """Per request."""
    usd_per_million_prompt_tokens: float = Field(default=0.0, ge=0)
    """Price of input tokens (0 for a local server)."""
    usd_per_million_completion_tokens: float = Field(default=0.0, ge=0)
    """Price of output tokens (0 for a local server)."""

    @field_validator("api_key_env")
    @classmethod
    def _key_variable(cls, value: str | None) -> str | None:
        if value is not None and (not _API_KEY_VARIABLE.fullmatch(value) or value.startswith("MEETARA_")):
            raise ValueError(
                f"teacher api_key_env must name an API key variable such as OPENAI_API_KEY (ending in _API_KEY, "
                f"not MEETARA_*), not {value!r}"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"teacher base_url must be an http(s) URL such as http://localhost:8080/v1, not {value!r}")
        return value


class TeacherUsage(ToolModel):
    """What the teacher LLM was asked and what it cost."""

    requests: int = 0
    """Completions requested and answered (each paid for once)."""
    reused: int = 0
    """Completions taken from the checkpoint of an earlier, interrupted run instead of being requested."""
    retries: int = 0
    """Requests repeated after a 429, a 5xx, a timeout or a connection error."""
    malformed: int = 0
    """Answers that were not one valid conversation (skipped, not patched)."""
    prompt_tokens: int = 0
    """As the endpoint's ``usage`` reported them."""
    completion_tokens: int = 0
    usd: float = 0.0
    """Token cost at the teacher settings' prices."""
    seconds: float = 0.0
    """Wall time spent waiting for the teacher."""

    def __add__(self, other: TeacherUsage) -> TeacherUsage:
        return TeacherUsage(
            **{
                name: round(getattr(self, name) + getattr(other, name), 6)
                if name in ("usd", "seconds")
                else getattr(self, name) + getattr(other, name)
                for name in TeacherUsage.model_fields
            }
        )


class GenerateInput(ToolModel):
    """Arguments of ``data_generation.generate``."""

    domain: CatalogName
    """The domain to generate for."""
    count: int = Field(default=1000, ge=1, le=200_000)
    """Samples wanted after filtering (training plus evaluation split)."""
    seed: int = Field(default=0, ge=0)
    """Same seed, same domain, same material: same dataset."""
    generator: GeneratorName = "compositional"
    """``compositional`` (offline default), ``teacher`` (an LLM) or ``mixed`` (an LLM rewrites compositional drafts)."""
    teacher: TeacherSettings | None = None
    """Required for the teacher and mixed generators."""
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
    system_prompts: dict[str, int] = Field(default_factory=dict)
    """Conversations per system prompt (empty in statistics written before it was counted)."""

    @property
    def main_system_prompt(self) -> str | None:
        """The system prompt most conversations carry (the first of equals); ``None`` when none does."""
        if not self.system_prompts:
            return None
        return max(self.system_prompts.items(), key=lambda item: item[1])[0]


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
    teacher_usage: TeacherUsage | None = None
    """Requests, tokens and cost of the teacher LLM (teacher generator only)."""


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


class CheckTeacherInput(ToolModel):
    """Arguments of ``data_generation.check_teacher``."""

    teacher: TeacherSettings
    """The teacher to check."""


class CheckTeacherOutput(ToolModel):
    """Result of ``data_generation.check_teacher``."""

    ok: bool
    """Whether the teacher can be used as configured."""
    reason: str | None
    """Why not (unreachable endpoint, unknown model, missing file or key)."""
    models: list[str]
    """Models the endpoint lists (empty for a GGUF file or an endpoint without ``/models``)."""
