"""A job's report, assembled from the outputs its steps recorded."""

from __future__ import annotations

from pathlib import Path

from agents.conductor.steps import CONVERT, DATA, DEPLOY, KNOWLEDGE_TRANSFER, MODEL_QA, TRAIN
from protocol.agents.conductor import (
    TERMINAL_STATES,
    DeployedModel,
    JobRecord,
    JobReport,
    ModelReport,
    ReportFile,
    StageReport,
    ValidatedModel,
)
from protocol.agents.gguf_creation import BuiltModel, GgufFile
from runtime import atomic_write, loss_svg

__all__ = ["build_report", "report_folder", "write_report_files"]

REPORT = "report.json"
LOSS_CHART = "loss_curve.svg"


def report_folder(data_dir: Path, job_id: str) -> Path:
    """Where a finished job's report files are: ``data/reports/{job_id}/``."""
    return data_dir / "reports" / job_id


def write_report_files(report: JobReport, folder: Path) -> JobReport:
    """``report.json``, and ``loss_curve.svg`` when the job trained; the report with its path."""
    folder.mkdir(parents=True, exist_ok=True)
    if report.loss_curve:
        with atomic_write(folder / LOSS_CHART) as f:
            f.write(loss_svg({"training loss": report.loss_curve}, f"job {report.job_id}: training loss"))
    report = report.model_copy(update={"report_path": str(folder / REPORT)})
    with atomic_write(folder / REPORT) as f:
        f.write(report.model_dump_json(indent=2))
    return report


def _files(files: list[GgufFile], root: Path | None) -> list[ReportFile]:
    return [
        ReportFile(path=str(root / f.path) if root else f.path, kind=f.kind, size=f.size, sha256=f.sha256)
        for f in files
    ]


def _model(
    built: BuiltModel, qa: ValidatedModel | None, deployed: DeployedModel | None, models_dir: Path
) -> ModelReport:
    report = qa.report if qa else None
    if deployed is not None:
        # Deployed paths are relative to the models folder; the metadata and QA report beside the
        # deployed files are the ones to read (the build's copies may be replaced).
        entry = deployed.entry
        files = _files(entry.files, models_dir)
        metadata_path = str(models_dir / entry.path / f"{entry.model_id}_metadata.json")
        qa_report_path: str | None = str(models_dir / entry.path / f"{entry.model_id}_qa_report.json")
    else:
        files, metadata_path = _files(built.files, None), built.metadata_path
        qa_report_path = qa.report_path if qa else None
    return ModelReport(
        model_id=built.model_id,
        files=files,
        metadata_path=metadata_path,
        qa_report_path=qa_report_path,
        perplexity_base=report.perplexity_base if report else None,
        perplexity_adapted=report.perplexity_adapted if report else None,
        perplexity_merged=report.perplexity_merged if report else None,
        qa_score=report.score if report else None,
        qa_passed=report.passed if report else None,
        deployed_version=deployed.entry.version if deployed else None,
    )


def build_report(job: JobRecord, models_dir: Path, data_dir: Path | None = None) -> JobReport:
    """The job's report; with ``data_dir``, pointing at its report files where they were written."""
    data, trained, built = DATA.result(job), TRAIN.result(job), CONVERT.result(job)
    validated, deployed = MODEL_QA.result(job), DEPLOY.result(job)
    qa = {m.model_id: m for m in validated.models} if validated else {}
    deploys = {m.model_id: m for m in deployed.models} if deployed else {}
    models = [_model(m, qa.get(m.model_id), deploys.get(m.model_id), models_dir) for m in built.models] if built else []
    stages = [
        StageReport(step=s.name, seconds=s.seconds, usd=s.usd, attempts=s.attempts, usd_pending=s.usd_pending)
        for s in job.steps
    ]
    end = job.finished_at or job.updated_at
    warm = KNOWLEDGE_TRANSFER.result(job) if trained and trained.warm_started else None
    finished = job.state in TERMINAL_STATES  # a resumed job's earlier report is not its report
    written = report_folder(data_dir, job.job_id) / REPORT if data_dir and finished else None
    return JobReport(
        job_id=job.job_id,
        state=job.state,
        spec=job.spec,
        domains=job.domains,
        error=job.error,
        models=models,
        data_pass_rate=data.pass_rate if data else None,
        samples=data.stats.samples if data else None,
        stages=stages,
        total_seconds=round(end - job.created_at, 3) if job.state in ("done", "failed", "cancelled") else None,
        total_usd=round(sum(s.usd for s in job.steps), 6),
        warm_started_from=warm.domain if warm else None,
        loss_curve=trained.metrics.loss_curve if trained else [],
        report_path=str(written) if written and written.is_file() else None,
    )
