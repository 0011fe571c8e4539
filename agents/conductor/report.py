"""A job's report, assembled from the outputs its steps recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from protocol.agents.conductor import JobRecord, JobReport, ModelReport, ReportFile, StageReport

__all__ = ["build_report"]


def _by_model(job: JobRecord, step: Literal["model_qa", "deploy"]) -> dict[str, dict[str, Any]]:
    """A per-model step's outputs (model QA, deploy) by model id."""
    return {m["model_id"]: m for m in job.step(step).output.get("models", [])}


def _files(files: list[dict[str, Any]], root: Path | None) -> list[ReportFile]:
    return [
        ReportFile(
            path=str(root / f["path"]) if root else f["path"], kind=f["kind"], size=f["size"], sha256=f["sha256"]
        )
        for f in files
    ]


def _model(built: dict[str, Any], qa: dict[str, Any], deployed: dict[str, Any], models_dir: Path) -> ModelReport:
    report = qa.get("report", {})
    entry = deployed.get("entry")
    return ModelReport(
        model_id=built["model_id"],
        # deployed paths are relative to the models folder
        files=_files(entry["files"], models_dir) if entry else _files(built["files"], None),
        # Once deployed, the metadata and QA report beside the deployed files (the build's copies may be replaced).
        metadata_path=str(models_dir / entry["path"] / f"{entry['model_id']}_metadata.json")
        if entry
        else built["metadata_path"],
        qa_report_path=str(models_dir / entry["path"] / f"{entry['model_id']}_qa_report.json")
        if entry
        else qa.get("report_path"),
        perplexity_base=report.get("perplexity_base"),
        perplexity_adapted=report.get("perplexity_adapted"),
        perplexity_merged=report.get("perplexity_merged"),
        qa_score=report.get("score"),
        qa_passed=report.get("passed"),
        deployed_version=entry["version"] if entry else None,
    )


def build_report(job: JobRecord, models_dir: Path) -> JobReport:
    data = job.step("data").output
    trained = job.step("train").output
    qa, deployed = _by_model(job, "model_qa"), _by_model(job, "deploy")
    models = [
        _model(m, qa.get(m["model_id"], {}), deployed.get(m["model_id"], {}), models_dir)
        for m in job.step("convert").output.get("models", [])
    ]
    stages = [StageReport(step=s.name, seconds=s.seconds, usd=s.usd, attempts=s.attempts) for s in job.steps]
    end = job.finished_at or job.updated_at
    return JobReport(
        job_id=job.job_id,
        state=job.state,
        spec=job.spec,
        domains=job.domains,
        error=job.error,
        models=models,
        data_pass_rate=data.get("pass_rate"),
        samples=data.get("stats", {}).get("samples"),
        stages=stages,
        total_seconds=round(end - job.created_at, 3) if job.state in ("done", "failed", "cancelled") else None,
        total_usd=round(sum(s.usd for s in job.steps), 6),
        warm_started_from=job.step("knowledge_transfer").output.get("domain") if trained.get("warm_started") else None,
    )
