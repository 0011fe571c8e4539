"""Tool models of the Quality Assurance agent (data side)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocol._base import ToolModel
from protocol._tools import ArtifactRef

__all__ = [
    "DataRule",
    "FilterDatasetInput",
    "FilterDatasetOutput",
    "FilterReport",
    "RejectionExample",
    "RuleReport",
]

DataRule = Literal[
    "schema", "length", "pii", "crisis_safety", "empathy", "relevance", "exact_duplicate", "near_duplicate"
]
"""A data rule. ``schema`` always runs: a sample that does not parse cannot be checked further."""


class FilterDatasetInput(ToolModel):
    """Arguments of ``quality_assurance.filter_dataset``."""

    dataset: ArtifactRef
    """JSONL of ``ConversationSample`` lines."""
    domain: str = Field(min_length=1, max_length=64)
    """The domain the data is for (relevance reference and category thresholds)."""
    rules: list[DataRule] | None = None
    """Rules to apply; all of them when absent."""
    against: list[ArtifactRef] = Field(default_factory=list, max_length=64)
    """Datasets already accepted: new samples repeating them count as duplicates."""
    pii: Literal["reject", "scrub"] | None = None
    """What to do with personal data; the category's configured policy when absent."""


class RejectionExample(ToolModel):
    """One rejected sample, to show what a rule caught."""

    sample_id: str
    """The sample's id (``line:N`` when it could not be parsed)."""
    reason: str
    """Why the rule rejected it."""
    excerpt: str
    """The start of its text."""


class RuleReport(ToolModel):
    """What one rule did."""

    rule: DataRule
    """The rule."""
    rejected: int
    """Samples it rejected."""
    scrubbed: int = 0
    """Samples it repaired instead (PII in scrub mode)."""
    examples: list[RejectionExample]
    """Up to three examples of rejections."""


class FilterReport(ToolModel):
    """The outcome of filtering one dataset."""

    input: int
    """Samples read."""
    kept: int
    """Samples that passed every rule."""
    pass_rate: float
    """kept / input."""
    rules: list[RuleReport]
    """Per-rule counts and examples."""
    near_duplicate_rate: float
    """Share of the input rejected as near-duplicates."""
    mean_relevance: float | None
    """Mean similarity of the samples to the domain description, when relevance ran."""


class FilterDatasetOutput(ToolModel):
    """Result of ``quality_assurance.filter_dataset``."""

    kept: ArtifactRef
    """JSONL of the samples that passed."""
    rejections: ArtifactRef
    """JSONL of ``{id, rule, reason}`` per rejected sample."""
    report: FilterReport
    """Counts, examples and pass rate."""
