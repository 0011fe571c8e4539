"""Versioned deployment into ``models/gguf/{lane}/{model_id}/{version}/`` with ``models/manifest.json``.

Order of operations, so that a crash at any point leaves a consistent, recoverable state:
1. copy and verify the files into a staging folder on the same filesystem;
2. rename the staging folder to the new version's folder (new name, nothing overwritten);
3. rewrite the manifest atomically: this is the moment the new version becomes current;
4. move the replaced production version's folder to legacy.
Readers find models through the manifest. A repeated deploy of identical files is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agents.gguf_creation.model_card import model_card
from agents.gguf_creation.ollama import write_modelfiles
from agents.gguf_creation.regression import RegressionSettings, compare_reports
from agents.llm.layout import MANIFEST, STAGING, ModelLayout, VersionLayout
from protocol import InvalidParams
from protocol.agents.gguf_creation import GgufFile, Lane, ManifestEntry, ModelMetadata
from protocol.agents.quality_assurance import ModelQAReport, ReportComparison
from runtime import atomic_path, atomic_write

__all__ = ["Deployment", "Manifest", "deploy_version", "production_report", "read_manifest"]


class Manifest(BaseModel):
    """``models/manifest.json``."""

    model_config = ConfigDict(extra="forbid")

    models: list[ManifestEntry] = []


class Deployment(BaseModel):
    entry: ManifestEntry
    retired: ManifestEntry | None
    already_deployed: bool
    comparison: ReportComparison | None = None


def read_manifest(models_dir: Path) -> Manifest:
    path = models_dir / MANIFEST
    if not path.is_file():
        return Manifest()
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise InvalidParams(f"{path} is not a valid manifest: {exc}") from exc


@contextlib.contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    """One deploy at a time per models folder, across processes (replicas on a shared volume)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".manifest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_to_legacy(models_dir: Path, retired: ManifestEntry) -> None:
    """Move a retired version's folder from production to its legacy place, if not moved yet."""
    source = models_dir / VersionLayout.of(retired).in_lane("production").folder
    if source.is_dir():
        target = models_dir / retired.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)


def _recover(models_dir: Path, manifest: Manifest) -> None:
    """Finish what a crashed deploy left: retired folders not yet moved, staging folders."""
    for entry in manifest.models:
        if entry.lane == "legacy" and not (models_dir / entry.path).exists():
            _move_to_legacy(models_dir, entry)
    if (models_dir / STAGING).is_dir():
        for stale in (models_dir / STAGING).iterdir():
            shutil.rmtree(stale, ignore_errors=True)


def _check(metadata: ModelMetadata, report: ModelQAReport) -> list[GgufFile]:
    """The files to deploy, once the QA report is known to have passed these exact files."""
    if report.model_id != metadata.model_id:
        raise InvalidParams(f"QA report is for {report.model_id}, not {metadata.model_id}")
    if not report.passed:
        failed = ", ".join(c.name for c in report.checks if not c.passed) or "score below target"
        raise InvalidParams(f"refusing to deploy {metadata.model_id}: QA did not pass ({failed})")
    files = [f for f in metadata.files if f.kind in ("adapter", "merged")]
    checked = {f.sha256 for f in report.files}
    unchecked = [Path(f.path).name for f in files if f.sha256 not in checked]
    if unchecked:
        raise InvalidParams(f"refusing to deploy {metadata.model_id}: QA never checked {', '.join(unchecked)}")
    if any(f.artifact is None for f in files):
        raise InvalidParams(f"the metadata of {metadata.model_id} lacks artifact references for its files")
    return files


def _deployed_already(manifest: Manifest, model_id: str, lane: Lane, files: list[GgufFile]) -> ManifestEntry | None:
    shas = sorted(f.sha256 for f in files)
    for entry in manifest.models:
        if entry.model_id == model_id and entry.lane == lane and sorted(f.sha256 for f in entry.files) == shas:
            return entry
    return None


def _new_version(manifest: Manifest, model_id: str, version: str | None) -> str:
    """``version``, which must be new, or the next number after the model's highest."""
    numbers = [int(e.version[1:]) for e in manifest.models if e.model_id == model_id]
    version = version or f"v{max(numbers, default=0) + 1}"
    if any(e.model_id == model_id and e.version == version for e in manifest.models):
        raise InvalidParams(f"{model_id} {version} is already deployed; choose another version")
    return version


def _write_records(
    folder: Path, target: VersionLayout, metadata: ModelMetadata, report: ModelQAReport, files: list[GgufFile]
) -> None:
    """Beside the model files: the metadata (now with its version and QA summary), the QA report, and
    what users run the version with (Ollama Modelfiles, the model card)."""
    qa_summary = {
        "score": report.score,
        "target": report.target,
        "passed": report.passed,
        "perplexity_base": report.perplexity_base,
        "perplexity_adapted": report.perplexity_adapted,
    }
    deployed = metadata.model_copy(update={"version": target.version, "qa": qa_summary})
    with atomic_write(folder / target.metadata_path.name) as f:
        f.write(deployed.model_dump_json(indent=2))
    with atomic_write(folder / target.qa_report_path.name) as f:
        f.write(report.model_dump_json(indent=2))
    modelfiles = write_modelfiles(
        folder,
        deployed,
        report.sampling,
        files,
        merged_name=target.modelfile_path.name,
        adapter_name=target.adapter_modelfile_path.name,
    )
    with atomic_write(folder / target.card_path.name) as f:
        f.write(model_card(deployed, report, files, modelfiles))


def _stage(
    models_dir: Path,
    target: VersionLayout,
    metadata: ModelMetadata,
    report: ModelQAReport,
    files: list[GgufFile],
    fetch: Callable[[GgufFile, Path], None],
) -> list[GgufFile]:
    """Assemble the version in a staging folder, then rename it into place; its files as deployed.

    The rename is the only step that touches ``target``'s folder, so it holds all the files or none.
    """
    (models_dir / STAGING).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models_dir / STAGING, prefix=f"{metadata.model_id}-"))
    try:
        deployed = []
        for file in files:
            name = Path(file.path).name
            fetch(file, staging / name)
            deployed.append(file.model_copy(update={"path": str(target.folder / name)}))
        _write_records(staging, target, metadata, report, deployed)
        final = models_dir / target.folder
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return deployed


def _retire(entry: ManifestEntry) -> ManifestEntry:
    """``entry`` moved to the legacy lane, its paths with it."""
    legacy = VersionLayout.of(entry).in_lane("legacy").folder
    files = [f.model_copy(update={"path": str(legacy / Path(f.path).name)}) for f in entry.files]
    return entry.model_copy(update={"lane": "legacy", "path": str(legacy), "files": files})


def _rewrite_manifest(models_dir: Path, manifest: Manifest, entry: ManifestEntry) -> ManifestEntry | None:
    """Write the manifest with ``entry`` added (the moment it becomes current); the production entry it retired."""
    retired = None
    models: list[ManifestEntry] = []
    for existing in manifest.models:
        if entry.lane == "production" and existing.model_id == entry.model_id and existing.lane == "production":
            retired = _retire(existing)
            models.append(retired)
        else:
            models.append(existing)
    models.append(entry)
    with atomic_write(models_dir / MANIFEST) as f:
        f.write(json.dumps(Manifest(models=models).model_dump(mode="json"), indent=2))
    return retired


def production_report(
    models_dir: Path, manifest: Manifest, model_id: str
) -> tuple[ManifestEntry, ModelQAReport] | None:
    """The current production version of a model and its QA report, if there is one."""
    for entry in manifest.models:
        if entry.model_id == model_id and entry.lane == "production":
            path = models_dir / VersionLayout.of(entry).qa_report_path
            try:
                return entry, ModelQAReport.model_validate_json(path.read_bytes())
            except (OSError, ValueError):
                return None  # unreadable: nothing to compare against (the deploy says so)
    return None


def _regression_gate(
    models_dir: Path, manifest: Manifest, report: ModelQAReport, settings: RegressionSettings, allow: bool
) -> ReportComparison | None:
    """Refuse a production candidate worse than production on the same evaluation (unless allowed)."""
    current = production_report(models_dir, manifest, report.model_id)
    if current is None:
        return None
    entry, baseline = current
    comparison = compare_reports(baseline, report, settings, entry.version)
    if comparison.worse and not allow:
        rows = "; ".join(f"{m.metric} {m.baseline} -> {m.candidate}" for m in comparison.metrics if m.worse)
        raise InvalidParams(
            f"refusing to deploy {report.model_id}: worse than production {entry.version} on the same "
            f"evaluation ({rows}); deploy with allow_regression to override"
        )
    return comparison


def deploy_version(
    models_dir: Path,
    metadata: ModelMetadata,
    report: ModelQAReport,
    *,
    lane: Lane,
    version: str | None,
    job_id: str | None,
    fetch: Callable[[GgufFile, Path], None],
    now: str,
    regression: RegressionSettings | None = None,
    allow_regression: bool = False,
) -> Deployment:
    """Deploy the model's files as a new version in ``lane``; QA must have passed for these files.

    ``fetch(file, destination)`` copies one file's verified content (from the artifact store).
    ``regression``: the margins of the regression gate for a production deploy (None: no gate).
    """
    files = _check(metadata, report)
    with _locked(models_dir):
        manifest = read_manifest(models_dir)
        _recover(models_dir, manifest)
        existing = _deployed_already(manifest, metadata.model_id, lane, files)
        if existing is not None:
            return Deployment(entry=existing, retired=None, already_deployed=True)
        comparison = None
        if lane == "production" and regression is not None:
            comparison = _regression_gate(models_dir, manifest, report, regression, allow_regression)
        target = VersionLayout(lane, metadata.model_id, _new_version(manifest, metadata.model_id, version))
        entry = ManifestEntry(
            model_id=metadata.model_id,
            version=target.version,
            lane=lane,
            path=str(target.folder),
            files=_stage(models_dir, target, metadata, report, files, fetch),
            qa_score=report.score,
            deployed_at=now,
            job_id=job_id,
        )
        retired = _rewrite_manifest(models_dir, manifest, entry)
        if retired is not None:
            _move_to_legacy(models_dir, retired)
        return Deployment(entry=entry, retired=retired, already_deployed=False, comparison=comparison)


def publish_layout(models_dir: Path, entry: ManifestEntry, layout: ModelLayout) -> None:
    """Make the layout folder (D/C/A/B: the files users run) show the production version ``entry``.

    Each file is a hard link into the version's folder (a copy where links cannot be made),
    swapped in atomically; the metadata goes last, so it never describes files not yet there.
    """
    version = VersionLayout.of(entry)
    sources = [models_dir / f.path for f in entry.files]
    links = [(source, source.name) for source in sources] + [
        (models_dir / version.qa_report_path, layout.qa_report_name),
        (models_dir / version.metadata_path, layout.metadata_name),
    ]
    for source, target_name in links:
        with atomic_path(models_dir / layout.folder / target_name) as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:  # another filesystem, or links not allowed
                shutil.copyfile(source, tmp)
