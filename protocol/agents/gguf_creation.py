"""Tool models of the GGUF Creation agent."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from protocol._base import CatalogName, Identifier, ModelId, ToolModel
from protocol._tools import ArtifactRef
from protocol.agents.gpu_optimization import Scope, TrainingMetrics
from protocol.agents.quality_assurance import ReportComparison

__all__ = [
    "BuiltModel",
    "CompareVersionsInput",
    "CreateGgufInput",
    "CreateGgufOutput",
    "DeployInput",
    "DeployOutput",
    "FileKind",
    "GgufFile",
    "Lane",
    "ListModelsInput",
    "ListModelsOutput",
    "ManifestEntry",
    "ModelMetadata",
    "VersionFilesInput",
    "VersionFilesOutput",
]

Lane = Literal["production", "development", "legacy"]
FileKind = Literal["adapter", "merged_f16", "merged"]
VERSION_PATTERN = r"^v[0-9]{1,6}$"


class CreateGgufInput(ToolModel):
    """Arguments of ``gguf_creation.create_gguf``."""

    scope: Scope = "domain"
    """Domain (D layout), category (C) or universal (A full quant and B smaller quant)."""
    target: CatalogName
    """Domain or category name (``universal`` for the universal scope)."""
    adapter: ArtifactRef
    """The trained LoRA adapter (from ``gpu_optimization.train``)."""
    base_model: str | None = Field(default=None, max_length=1024)
    """The base model the adapter was trained on; ``None``: the pip-shipped SmolLM2."""
    quantization: str = Field(default="Q4_K_M", pattern=r"^[A-Z0-9_]{2,16}$")
    """llama.cpp type of the merged model (A lane for universal)."""
    lite_quantization: str = Field(default="Q3_K_S", pattern=r"^[A-Z0-9_]{2,16}$")
    """Smaller type for the universal B lane."""
    adapter_dtype: Literal["F16", "F32", "Q8_0"] = "F16"
    """Storage type of the adapter GGUF's tensors."""
    merge: bool = True
    """Also build the merged, quantized model."""
    keep_f16: bool = False
    """Keep the merged F16 intermediate in the training folder (for agreement checks)."""
    data_stats: dict[str, Any] = Field(default_factory=dict)
    """Dataset statistics to record in the metadata."""
    system_prompt: str | None = Field(default=None, min_length=1, max_length=4000)
    """The system prompt the model was trained under: the merged model's chat template sends it when a
    conversation brings none; ``None``: the base model's template is kept as it is."""
    training: TrainingMetrics | None = None
    """Training metrics to record in the metadata."""


class GgufFile(ToolModel):
    """One produced file."""

    kind: FileKind
    """``adapter`` (LoRA GGUF applied on the base), ``merged_f16`` (intermediate) or ``merged`` (quantized)."""
    path: str
    """Where it was written."""
    quantization: str
    """Tensor storage type (``F16``, ``Q4_K_M``…)."""
    size: int
    """Bytes."""
    sha256: str
    """Hex SHA-256."""
    artifact: ArtifactRef | None = None
    """The same file in the artifact store (the F16 intermediate is not stored)."""


class ModelMetadata(ToolModel):
    """``{name}_metadata.json`` beside the files."""

    model_id: ModelId
    """``meetara_{domain}``, ``meetara_{category}_category``, ``meetara_universal_full``…"""
    scope: Scope
    """What the model covers."""
    domain: CatalogName | None
    """The domain (domain scope)."""
    category: CatalogName | None
    """The category (domain and category scopes)."""
    domains: list[str]
    """Every domain whose data trained it."""
    description: str
    """What it is for."""
    version: Annotated[str, Field(pattern=VERSION_PATTERN)] | None
    """Deployed version (set by deploy)."""
    base_model: str
    """Base model name."""
    base_model_path: str
    """Where the base model was."""
    base_sha256: str | None
    """SHA-256 of the base GGUF."""
    lora: dict[str, Any]
    """LoRA rank, alpha, dropout, target modules."""
    system_prompt: str | None = None
    """The system prompt the model was trained under. The merged model's chat template sends it when a
    conversation has no system message; with the adapter file, send it yourself."""
    data_stats: dict[str, Any]
    """Dataset statistics."""
    training: TrainingMetrics | None
    """Training metrics."""
    qa: dict[str, Any] | None
    """QA summary (score, passed, perplexities), once validated."""
    files: list[GgufFile]
    """The files, sizes and hashes."""
    created_at: str
    """ISO 8601 UTC."""
    tool: str
    """Producing software and version."""


class BuiltModel(ToolModel):
    """One model written into the layout (universal jobs build two: full and lite)."""

    model_id: str
    """Model identifier (file-name stem without the quantization)."""
    files: list[GgufFile]
    """Its files: the adapter GGUF (not for lite) and the merged quantized model."""
    metadata_path: str
    """The metadata JSON beside the files."""
    metadata: ArtifactRef
    """The metadata JSON in the artifact store."""


class CreateGgufOutput(ToolModel):
    """Result of ``gguf_creation.create_gguf``."""

    models: list[BuiltModel]
    """The models built."""
    seconds: dict[str, float]
    """Wall time per stage (adapter, merge, quantize)."""


class DeployInput(ToolModel):
    """Arguments of ``gguf_creation.deploy``."""

    job_id: Identifier | None = None
    """Job this deploy belongs to."""
    metadata: ArtifactRef
    """The model's metadata JSON (from ``create_gguf``)."""
    qa_report: ArtifactRef
    """The QA report JSON (from ``quality_assurance.validate_model``); must say passed."""
    lane: Literal["production", "development"] = "production"
    """Where to deploy; the replaced production version moves to legacy."""
    version: str | None = Field(default=None, pattern=VERSION_PATTERN)
    """Version label; ``None``: the next free ``vN``."""
    allow_regression: bool = False
    """Deploy to production even when the candidate is worse than the production version on the
    same evaluation set (the regression gate refuses it otherwise)."""


class ManifestEntry(ToolModel):
    """One deployed model version in ``models/manifest.json``."""

    model_id: str
    """Model identifier."""
    version: str
    """Version label."""
    lane: Lane
    """Current lane."""
    path: str
    """Folder holding the version, relative to the models folder."""
    files: list[GgufFile]
    """Files with sizes and hashes (paths relative to the models folder)."""
    qa_score: float
    """QA score of this version."""
    deployed_at: str
    """ISO 8601 UTC."""
    job_id: str | None
    """Producing job."""


class DeployOutput(ToolModel):
    """Result of ``gguf_creation.deploy``."""

    entry: ManifestEntry
    """The deployed version."""
    retired: ManifestEntry | None
    """The production version that moved to legacy."""
    manifest_path: str
    """Path of ``manifest.json``."""
    already_deployed: bool
    """True when these exact files were already deployed in this lane (nothing moved)."""
    comparison: ReportComparison | None = None
    """The candidate against the production version it replaced (None: nothing to compare)."""


class CompareVersionsInput(ToolModel):
    """Arguments of ``gguf_creation.compare_versions``."""

    model_id: ModelId
    """The model."""
    baseline: str = Field(pattern=VERSION_PATTERN)
    """The earlier version (``v1``)."""
    candidate: str = Field(pattern=VERSION_PATTERN)
    """The version compared with it (``v2``)."""


class ListModelsInput(ToolModel):
    """Arguments of ``gguf_creation.list_models``."""

    lane: Lane | None = None
    """Only this lane."""
    model_id: ModelId | None = None
    """Only this model."""


class ListModelsOutput(ToolModel):
    """Result of ``gguf_creation.list_models``."""

    models: list[ManifestEntry]
    """Matching deployed versions, newest first."""
    manifest_path: str
    """Path of ``manifest.json``."""


class VersionFilesInput(ToolModel):
    """Arguments of ``gguf_creation.version_files``."""

    model_id: ModelId
    """The model."""
    version: str | None = Field(default=None, pattern=VERSION_PATTERN)
    """The version; ``None``: the production one."""


class VersionFilesOutput(ToolModel):
    """Result of ``gguf_creation.version_files``: what an export copies."""

    entry: ManifestEntry
    """The version, with its model files (by artifact reference, to fetch and verify)."""
    documents: dict[str, str]
    """Its text records by file name: model card, Ollama Modelfiles, metadata, QA report."""
    qa_report: str | None = None
    """Which of ``documents`` is the QA report the version was deployed on."""
