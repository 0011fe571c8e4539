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

from agents.llm.layout import ModelLayout
from protocol import InvalidParams
from protocol.agents.gguf_creation import GgufFile, Lane, ManifestEntry, ModelMetadata
from protocol.agents.quality_assurance import ModelQAReport
from runtime import atomic_path, atomic_write

__all__ = ["Deployment", "Manifest", "deploy_version", "read_manifest"]


class Manifest(BaseModel):
    """``models/manifest.json``."""

    model_config = ConfigDict(extra="forbid")

    models: list[ManifestEntry] = []


class Deployment(BaseModel):
    entry: ManifestEntry
    retired: ManifestEntry | None
    already_deployed: bool


def read_manifest(models_dir: Path) -> Manifest:
    path = models_dir / "manifest.json"
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


def _next_version(manifest: Manifest, model_id: str) -> str:
    numbers = [int(e.version[1:]) for e in manifest.models if e.model_id == model_id]
    return f"v{max(numbers, default=0) + 1}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover(models_dir: Path, manifest: Manifest) -> None:
    """Finish what a crashed deploy left: retired folders not yet moved, staging folders."""
    for entry in manifest.models:
        if entry.lane == "legacy" and not (models_dir / entry.path).exists():
            leftover = models_dir / manifest_path_of(entry, "production")
            if leftover.is_dir():
                (models_dir / entry.path).parent.mkdir(parents=True, exist_ok=True)
                os.rename(leftover, models_dir / entry.path)
    staging_root = models_dir / "gguf" / ".staging"
    if staging_root.is_dir():
        for stale in staging_root.iterdir():
            shutil.rmtree(stale, ignore_errors=True)


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
) -> Deployment:
    """Deploy the model's files as a new version in ``lane``; QA must have passed for these files.

    ``fetch(file, destination)`` copies one file's verified content (from the artifact store).
    """
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

    with _locked(models_dir):
        manifest = read_manifest(models_dir)
        _recover(models_dir, manifest)
        shas = sorted(f.sha256 for f in files)
        for entry in manifest.models:
            same = sorted(f.sha256 for f in entry.files) == shas
            if entry.model_id == metadata.model_id and entry.lane == lane and same:
                return Deployment(entry=entry, retired=None, already_deployed=True)
        version = version or _next_version(manifest, metadata.model_id)
        if any(e.model_id == metadata.model_id and e.version == version for e in manifest.models):
            raise InvalidParams(f"{metadata.model_id} {version} is already deployed; choose another version")
        relative = Path("gguf") / lane / metadata.model_id / version
        final = models_dir / relative
        staging_root = models_dir / "gguf" / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=staging_root, prefix=f"{metadata.model_id}-"))
        try:
            deployed_files = []
            for file in files:
                name = Path(file.path).name
                fetch(file, staging / name)
                deployed_files.append(file.model_copy(update={"path": str(relative / name), "artifact": file.artifact}))
            qa_summary = {
                "score": report.score,
                "target": report.target,
                "passed": report.passed,
                "perplexity_base": report.perplexity_base,
                "perplexity_adapted": report.perplexity_adapted,
            }
            deployed_metadata = metadata.model_copy(update={"version": version, "qa": qa_summary})
            with atomic_write(staging / f"{metadata.model_id}_metadata.json") as f:
                f.write(deployed_metadata.model_dump_json(indent=2))
            with atomic_write(staging / f"{metadata.model_id}_qa_report.json") as f:
                f.write(report.model_dump_json(indent=2))
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

        entry = ManifestEntry(
            model_id=metadata.model_id,
            version=version,
            lane=lane,
            path=str(relative),
            files=deployed_files,
            qa_score=report.score,
            deployed_at=now,
            job_id=job_id,
        )
        retired = None
        models: list[ManifestEntry] = []
        for existing in manifest.models:
            if lane == "production" and existing.model_id == metadata.model_id and existing.lane == "production":
                legacy_path = Path("gguf") / "legacy" / existing.model_id / existing.version
                retired = existing.model_copy(
                    update={
                        "lane": "legacy",
                        "path": str(legacy_path),
                        "files": [
                            f.model_copy(update={"path": str(legacy_path / Path(f.path).name)}) for f in existing.files
                        ],
                    }
                )
                models.append(retired)
            else:
                models.append(existing)
        models.append(entry)
        with atomic_write(models_dir / "manifest.json") as f:
            f.write(json.dumps(Manifest(models=models).model_dump(mode="json"), indent=2))
        if retired is not None:
            source, target = models_dir / manifest_path_of(retired, "production"), models_dir / retired.path
            if source.is_dir():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(source, target)
        return Deployment(entry=entry, retired=retired, already_deployed=False)


def publish_layout(models_dir: Path, entry: ManifestEntry, layout: ModelLayout) -> None:
    """Make the layout folder (D/C/A/B: the files users run) show the production version ``entry``.

    Each file is a hard link into the version's folder (a copy where links cannot be made),
    swapped in atomically; the metadata goes last, so it never describes files not yet there.
    """
    version_dir = models_dir / entry.path
    names = [Path(f.path).name for f in entry.files]
    sources = [(name, name) for name in names] + [
        (f"{entry.model_id}_qa_report.json", layout.qa_report_name),
        (f"{entry.model_id}_metadata.json", layout.metadata_name),
    ]
    for source_name, target_name in sources:
        source = version_dir / source_name
        with atomic_path(models_dir / layout.folder / target_name) as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:  # another filesystem, or links not allowed
                shutil.copyfile(source, tmp)


def manifest_path_of(entry: ManifestEntry, lane: Lane) -> Path:
    return Path("gguf") / lane / entry.model_id / entry.version
