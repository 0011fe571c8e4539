"""A job's report, assembled from the outputs its steps recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocol.agents.conductor import JobRecord, JobReport, ReportFile, StageReport

__all__ = ["build_report"]


def _files(job: JobRecord, models_dir: Path) -> list[ReportFile]:
    deployed = job.step("deploy").output.get("entry")
    if deployed:  # deployed paths are relative to the models folder
        files = [{**f, "path": str(models_dir / f["path"])} for f in deployed["files"]]
    else:
        files = [f for m in job.step("convert").output.get("models", []) for f in m["files"]]
    return [ReportFile(path=f["path"], kind=f["kind"], size=f["size"], sha256=f["sha256"]) for f in files]


def build_report(job: JobRecord, models_dir: Path) -> JobReport:
    data = job.step("data").output
    trained = job.step("train").output
    converted: list[dict[str, Any]] = job.step("convert").output.get("models", [])
    qa = job.step("model_qa").output
    report = qa.get("report", {})
    deployed = job.step("deploy").output.get("entry")
    stages = [StageReport(step=s.name, seconds=s.seconds, usd=s.usd, attempts=s.attempts) for s in job.steps]
    end = job.finished_at or job.updated_at
    return JobReport(
        job_id=job.job_id,
        state=job.state,
        spec=job.spec,
        domains=job.domains,
        error=job.error,
        files=_files(job, models_dir),
        metadata_path=converted[0]["metadata_path"] if converted else None,
        qa_report_path=qa.get("report_path"),
        data_pass_rate=data.get("pass_rate"),
        samples=data.get("stats", {}).get("samples"),
        perplexity_base=report.get("perplexity_base"),
        perplexity_adapted=report.get("perplexity_adapted"),
        perplexity_merged=report.get("perplexity_merged"),
        qa_score=report.get("score"),
        qa_passed=report.get("passed"),
        deployed_version=deployed["version"] if deployed else None,
        stages=stages,
        total_seconds=round(end - job.created_at, 3) if job.state in ("done", "failed", "cancelled") else None,
        total_usd=round(sum(s.usd for s in job.steps), 6),
        warm_started_from=job.step("knowledge_transfer").output.get("domain") if trained.get("warm_started") else None,
    )
