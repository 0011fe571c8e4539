"""Tool models of the Knowledge Transfer agent."""

from __future__ import annotations

from pydantic import Field

from protocol._base import CatalogName, Identifier, ToolModel
from protocol._tools import ArtifactRef, DatasetRef

__all__ = [
    "IndexedDomain",
    "ListTransfersInput",
    "ListTransfersOutput",
    "RecommendInput",
    "Recommendation",
    "RegisterDomainInput",
    "RegisterDomainOutput",
    "SimilarDomain",
    "TransferComparison",
]


class RegisterDomainInput(ToolModel):
    """Arguments of ``knowledge_transfer.register``: a finished domain's adapter and how it trained."""

    domain: CatalogName
    base_model: str = Field(min_length=1, max_length=1024)
    """Identity of the base model the adapter belongs to (an adapter only transfers onto its own base)."""
    adapter: ArtifactRef
    dataset: DatasetRef
    """Its training conversations; a sample of their user turns joins the description in the embedding."""
    job_id: Identifier | None = None
    final_loss: float | None = None
    eval_loss: float | None = None
    steps: int = Field(ge=0)
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)
    """(step, training loss) as the trainer recorded it."""
    warm_started_from: CatalogName | None = None


class IndexedDomain(ToolModel):
    """One entry of the index."""

    domain: str
    base_model: str
    adapter: ArtifactRef
    job_id: str | None
    final_loss: float | None
    eval_loss: float | None
    steps: int
    loss_curve: list[tuple[int, float]]
    warm_started_from: str | None
    embedding: list[float]
    """Unit vector (all-MiniLM-L6-v2) of the description and a sample of the data."""


class RegisterDomainOutput(ToolModel):
    domain: str
    indexed: int
    """Domains indexed for this base model, this one included."""


class RecommendInput(ToolModel):
    """Arguments of ``knowledge_transfer.recommend``."""

    domain: CatalogName
    base_model: str = Field(min_length=1, max_length=1024)
    dataset: DatasetRef | None = None
    """The new domain's training data, when already generated (sharpens the comparison)."""


class SimilarDomain(ToolModel):
    domain: str
    similarity: float


class Recommendation(ToolModel):
    """The most similar trained domain, and whether to warm-start from it."""

    domain: str | None
    """Domain to warm-start from; ``None`` when none is similar enough."""
    similarity: float | None
    adapter: ArtifactRef | None
    threshold: float
    candidates: list[SimilarDomain]
    """Every indexed domain of the same base, most similar first."""


class ListTransfersInput(ToolModel):
    """Arguments of ``knowledge_transfer.transfers`` (none)."""


class TransferComparison(ToolModel):
    """One domain trained both cold and warm: steps each run needed to reach the cold run's final loss."""

    domain: str
    warm_started_from: str
    target_loss: float
    """The cold run's final training loss."""
    cold_steps: int
    """Steps of the cold run (it reached the target at its end by definition)."""
    warm_steps_to_target: int | None
    """First step of the warm run whose loss is at or below the target; ``None`` when never reached."""
    cold_job: str | None
    warm_job: str | None


class ListTransfersOutput(ToolModel):
    """Warm versus cold, measured from the recorded loss curves."""

    comparisons: list[TransferComparison]
