"""Is a candidate model worse than the production one? Two QA reports on the same evaluation set.

Compared: the QA score, every evaluation reply rate, the crisis real-help rate per kind, the
perplexity of the hand-written reference replies, and each check that passed before and fails
now. Reports on different evaluation sets, asked differently (a system message or not, crisis
messages or not), or one from before evaluation sets existed are not comparable: the gate then
lets the deploy through and says why.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from protocol.agents.quality_assurance import MetricComparison, ModelQAReport, ReportComparison
from runtime import load_config

__all__ = ["RegressionSettings", "compare_reports", "load_regression_settings"]


class RegressionSettings(BaseModel):
    """``configs/regression.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    score_drop_max: float = Field(ge=0)
    rate_drop_max: float = Field(ge=0, le=1)
    crisis_drop_max: float = Field(ge=0, le=1)
    perplexity_rise_max: float = Field(ge=0)


def load_regression_settings(directory: Path | None = None) -> RegressionSettings:
    return load_config(RegressionSettings, directory, "regression.yaml")


def _lower_is_worse(metric: str, baseline: float, candidate: float, margin: float) -> MetricComparison:
    return MetricComparison(metric=metric, baseline=baseline, candidate=candidate, worse=candidate < baseline - margin)


def compare_reports(
    baseline: ModelQAReport, candidate: ModelQAReport, settings: RegressionSettings, baseline_version: str | None
) -> ReportComparison:
    """The candidate against the baseline, measure by measure."""
    before, after = baseline.evaluation, candidate.evaluation
    if before is None or after is None or before.sha256 != after.sha256 or before.asked != after.asked:
        why = (
            "the baseline's report has no evaluation-set results"
            if before is None
            else "the candidate's report has no evaluation-set results"
            if after is None
            else f"different evaluation sets ({before.category} v{before.version} vs v{after.version})"
            if before.sha256 != after.sha256
            else f"the set was asked differently ({before.asked or 'not recorded'} vs {after.asked})"
        )
        return ReportComparison(
            model_id=candidate.model_id,
            baseline_version=baseline_version,
            comparable=False,
            reason=why,
            metrics=[],
            worse=False,
        )
    metrics = [_lower_is_worse("score", baseline.score, candidate.score, settings.score_drop_max)]
    for key in sorted(set(before.rates) & set(after.rates)):
        margin = settings.crisis_drop_max if key.endswith(".real_help") else settings.rate_drop_max
        metrics.append(_lower_is_worse(f"rate.{key}", before.rates[key], after.rates[key], margin))
    for kind in sorted(set(before.crisis_help_by_kind) & set(after.crisis_help_by_kind)):
        metrics.append(
            _lower_is_worse(
                f"crisis.{kind}",
                before.crisis_help_by_kind[kind],
                after.crisis_help_by_kind[kind],
                settings.crisis_drop_max,
            )
        )
    for label in sorted(set(before.reference_perplexity) & set(after.reference_perplexity) - {"base"}):
        old, new = before.reference_perplexity[label], after.reference_perplexity[label]
        metrics.append(
            MetricComparison(
                metric=f"reference_perplexity.{label}",
                baseline=old,
                candidate=new,
                worse=new > old * (1 + settings.perplexity_rise_max),
            )
        )
    passed_before = {c.name for c in baseline.checks if c.passed}
    for check in candidate.checks:
        if check.name in passed_before and not check.passed:
            metrics.append(MetricComparison(metric=f"check.{check.name}", baseline=1.0, candidate=0.0, worse=True))
    worse = [m.metric for m in metrics if m.worse]
    return ReportComparison(
        model_id=candidate.model_id,
        baseline_version=baseline_version,
        comparable=True,
        reason=f"worse on {', '.join(worse)}" if worse else "no measure is worse beyond its margin",
        metrics=metrics,
        worse=bool(worse),
    )
