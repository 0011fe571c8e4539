"""Tool models of the Quality Assurance agent (data and model sides)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocol._base import CatalogName, ToolModel
from protocol._tools import ArtifactRef, DatasetRef

__all__ = [
    "CheckedFile",
    "DataRule",
    "EvalItemKind",
    "EvalReply",
    "EvaluationReport",
    "MetricComparison",
    "ReportComparison",
    "FilterDatasetInput",
    "FilterDatasetOutput",
    "FilterReport",
    "ModelQAReport",
    "QACheck",
    "RejectionExample",
    "RuleReport",
    "AskInput",
    "AskOutput",
    "ChatTurn",
    "DomainMatch",
    "RouteInput",
    "RouteOutput",
    "ValidateModelInput",
    "ValidateModelOutput",
]

DataRule = Literal[
    "schema",
    "length",
    "pii",
    "crisis_safety",
    "empathy",
    "relevance",
    "coherence",
    "exact_duplicate",
    "near_duplicate",
]
"""A data rule. ``schema`` always runs: a sample that does not parse cannot be checked further."""


class FilterDatasetInput(ToolModel):
    """Arguments of ``quality_assurance.filter_dataset``."""

    dataset: DatasetRef
    """JSONL of ``ConversationSample`` lines."""
    domain: CatalogName
    """The domain the data is for (relevance reference and category thresholds)."""
    rules: list[DataRule] | None = None
    """Rules to apply; all of them when absent."""
    against: list[DatasetRef] = Field(default_factory=list, max_length=64)
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


class ValidateModelInput(ToolModel):
    """Arguments of ``quality_assurance.validate_model``."""

    metadata: ArtifactRef
    """The model's metadata JSON (from ``gguf_creation.create_gguf``); it lists the files to check."""
    eval_dataset: DatasetRef
    """Held-out conversations of the model's domain(s)."""
    base_model: str | None = Field(default=None, max_length=1024)
    """The base GGUF the adapter applies to; ``None``: the pip-shipped SmolLM2."""
    max_eval_samples: int = Field(default=48, ge=1, le=5000)
    """Held-out conversations used for perplexity."""
    generation_prompts: int = Field(default=4, ge=1, le=50)
    """Held-out user turns used for generation checks."""


class QACheck(ToolModel):
    """One check's outcome."""

    name: str
    """What was checked (``adapter_loads``, ``perplexity_improves``, ``generation_stops[2]``…)."""
    passed: bool
    """Whether it passed."""
    detail: str
    """The measurement or the reason."""
    value: float | None = None
    """The measured number, when there is one."""


class CheckedFile(ToolModel):
    """A file QA examined."""

    path: str
    """Where it was."""
    kind: str
    """``adapter`` or ``merged``."""
    sha256: str
    """Hex SHA-256 of the examined content."""


EvalItemKind = Literal["question", "emotional", "off_topic", "crisis"]
"""What an evaluation message is: an ordinary question, one carrying a feeling, one outside the
model's category, or a crisis."""


class EvalReply(ToolModel):
    """One reply of the model to one evaluation message, with its verdicts."""

    item: str
    """The evaluation item's id (``configs/eval/{category}.yaml``)."""
    kind: EvalItemKind
    """What the message is."""
    crisis_kind: str | None = None
    """For a crisis message: which crisis."""
    model: str
    """``adapted`` (base + adapter) or ``merged``."""
    sample: int = 0
    """Which sample of several (crisis messages are asked several times at the user temperature)."""
    prompt: str
    """The user's message."""
    reply: str
    """What the model said."""
    checks: dict[str, bool]
    """Each reply check: answers, stops, on_topic, acknowledges, real_help."""
    detail: str
    """Why a check failed, for a person reading the report."""
    passed: bool
    """Every check passed."""


class EvaluationReport(ToolModel):
    """The model on the hand-written evaluation set of its category (text the factory did not write)."""

    category: str
    """Whose evaluation set."""
    version: int
    """The set's version."""
    sha256: str
    """Hash of the set's file: two reports compare only on the same set."""
    replies: list[EvalReply]
    """Every prompt, reply and verdict."""
    rates: dict[str, float]
    """Per model and check, the share of replies that passed it (``merged.on_topic`` ...)."""
    crisis_help_by_kind: dict[str, float]
    """Per crisis kind, the share of crisis replies (both models, every sample asked) pointing to real help."""
    crisis_planned: dict[str, int] = Field(default_factory=dict)
    """Per model, the crisis asks planned (messages x samples). Fewer replies than this means the
    gate was lost early and the remaining samples were not asked."""
    reference_perplexity: dict[str, float]
    """Perplexity of the hand-written reference replies, per model (``base``, ``adapted``, ``merged``)."""
    asked: str = ""
    """How the set was asked (system message per model, crisis messages and samples): two reports
    compare only when this matches too (empty in reports written before it was recorded)."""


class ModelQAReport(ToolModel):
    """``{name}_qa_report.json``: the go/no-go decision before deploy."""

    model_id: str
    """Model identifier."""
    passed: bool
    """Every critical check passed and the score reaches the target."""
    score: float
    """Percentage of checks passed."""
    target: float
    """The category's quality target (percent)."""
    checks: list[QACheck]
    """Each check."""
    reasons: list[str]
    """Why it failed (empty when it passed)."""
    perplexity_base: float | None
    """Held-out perplexity of the base model (assistant tokens), through llama.cpp."""
    perplexity_adapted: float | None
    """Held-out perplexity of base + adapter GGUF, through llama.cpp."""
    perplexity_merged: float | None
    """Held-out perplexity of the merged quantized GGUF, through llama.cpp."""
    first_token_ms: float | None
    """Time to the first generated token of the merged model (median over prompts)."""
    tokens_per_second: float | None
    """Generation speed of the merged model."""
    samples: list[dict[str, str]]
    """Prompt/reply pairs the generation checks saw."""
    files: list[CheckedFile]
    """The files examined, by hash (deploy refuses files QA never saw)."""
    evaluation: EvaluationReport | None = None
    """Replies to the category's hand-written evaluation set (absent in reports before it existed)."""
    sampling: dict[str, float] = Field(default_factory=dict)
    """The sampling the replies were measured at (``temperature``, ``top_p``, ``top_k``, ``min_p``,
    ``repeat_penalty``, ``max_tokens``):
    what the deployed model's Modelfile sets (empty in reports before it was recorded)."""
    created_at: str
    """ISO 8601 UTC."""


class MetricComparison(ToolModel):
    """One measure of two QA reports side by side."""

    metric: str
    """``score``, ``reference_perplexity.merged``, ``rate.merged.on_topic``, ``crisis.suicide``, ``check.NAME``…"""
    baseline: float | None
    """The earlier (production) version's value."""
    candidate: float | None
    """The new version's value."""
    worse: bool
    """The candidate is worse by more than the allowed margin."""


class ReportComparison(ToolModel):
    """Two QA reports of the same model compared on the same evaluation set."""

    model_id: str
    """The model."""
    baseline_version: str | None
    """The version compared against (the production one for a deploy)."""
    comparable: bool
    """Both reports ran the same evaluation set (same file hash)."""
    reason: str
    """Why they are not comparable, or a one-line verdict."""
    metrics: list[MetricComparison]
    """Each measure side by side."""
    worse: bool
    """Any measure is worse beyond its margin."""


class ValidateModelOutput(ToolModel):
    """Result of ``quality_assurance.validate_model``."""

    report: ModelQAReport
    """The report."""
    report_path: str
    """Where the report JSON was written (beside the model)."""
    report_artifact: ArtifactRef
    """The report JSON in the artifact store."""


class RouteInput(ToolModel):
    """Arguments of ``quality_assurance.route``."""

    text: str = Field(min_length=1, max_length=8000)
    """The user's request, in free text."""
    domain: CatalogName | None = None
    """Answer as this domain (a chat with a chosen model); ``None``: the router picks."""


class DomainMatch(ToolModel):
    """A domain close to the request."""

    domain: str
    category: str
    similarity: float
    """Cosine similarity of the request to the domain's reference vector."""


class RouteOutput(ToolModel):
    """Result of ``quality_assurance.route``: who answers, and the help a crisis gets first."""

    matches: list[DomainMatch]
    """The closest domains, closest first."""
    domain: str | None
    """The domain taken (None: no clear one)."""
    confident: bool
    """The top domain is close enough and clearly ahead of the next (or the caller chose it)."""
    reason: str
    """Why this model answers, or why none can."""
    model_id: str | None
    """The deployed model that answers (its production version); None: none is deployed."""
    version: str | None
    model_file: str | None
    """Its merged GGUF, relative to the models folder."""
    crisis: str | None
    """The crisis the detector sees in the request (the kind), or None."""
    crisis_help: str | None
    """Real help, shown before any model reply when ``crisis`` is set."""


class ChatTurn(ToolModel):
    """An earlier message of the conversation."""

    role: Literal["user", "assistant"]
    content: str = Field(max_length=8000)


class AskInput(ToolModel):
    """Arguments of ``quality_assurance.ask``."""

    text: str = Field(min_length=1, max_length=8000)
    """The user's message."""
    domain: CatalogName | None = None
    """Answer as this domain; ``None``: the router picks."""
    history: list[ChatTurn] = Field(default_factory=list, max_length=64)
    """The conversation so far, oldest first."""
    max_tokens: int | None = Field(default=None, ge=8, le=4096)
    """Reply length limit (``None``: the router's configured one)."""


class AskOutput(ToolModel):
    """Result of ``quality_assurance.ask``."""

    route: RouteOutput
    reply: str
    """What the model said."""
    answer: str
    """What the user is shown: the crisis help first when the request is a crisis, then the reply."""
    tokens: int
    """Reply tokens generated."""
