"""Versioned, atomic deployment with a manifest; refusals leave everything as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from agents.gguf_creation.deploy import deploy_version, read_manifest
from agents.gguf_creation.regression import compare_reports, load_regression_settings
from protocol import ArtifactRef, InvalidParams
from protocol.agents.gguf_creation import GgufFile, ModelMetadata
from protocol.agents.quality_assurance import CheckedFile, EvaluationReport, ModelQAReport, QACheck

NOW = "2026-11-29T12:00:00+00:00"


def _file(folder: Path, name: str, content: bytes, kind: str) -> GgufFile:
    path = folder / name
    path.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    ref = ArtifactRef(uri=path.as_uri(), sha256=digest, size=len(content))
    return GgufFile(kind=kind, path=str(path), quantization="Q4_K_M", size=len(content), sha256=digest, artifact=ref)  # type: ignore[arg-type]


def _model(folder: Path, tag: bytes) -> tuple[ModelMetadata, ModelQAReport]:
    folder.mkdir(parents=True, exist_ok=True)
    files = [
        _file(folder, "meetara_general_health_lora_f16.gguf", b"adapter " + tag, "adapter"),
        _file(folder, "meetara_general_health_q4_k_m.gguf", b"merged " + tag, "merged"),
    ]
    metadata = ModelMetadata(
        model_id="meetara_general_health",
        scope="domain",
        domain="general_health",
        category="healthcare",
        domains=["general_health"],
        description="d",
        version=None,
        base_model="base",
        base_model_path="/b",
        base_sha256=None,
        lora={"r": 8},
        data_stats={},
        training=None,
        qa=None,
        files=files,
        created_at=NOW,
        tool="test",
    )
    report = ModelQAReport(
        model_id="meetara_general_health",
        passed=True,
        score=100.0,
        target=99.5,
        checks=[QACheck(name="perplexity_improves", passed=True, detail="ok")],
        reasons=[],
        perplexity_base=20.0,
        perplexity_adapted=12.0,
        perplexity_merged=12.5,
        first_token_ms=10.0,
        tokens_per_second=50.0,
        samples=[],
        files=[CheckedFile(path=f.path, kind=f.kind, sha256=f.sha256) for f in files],
        created_at=NOW,
    )
    return metadata, report


def _copy(file: GgufFile, destination: Path) -> None:
    shutil.copyfile(file.path, destination)


def _deploy(models: Path, metadata: ModelMetadata, report: ModelQAReport, **kw):  # type: ignore[no-untyped-def]
    options = {"lane": "production", "version": None, "job_id": "job-1", "fetch": _copy, "now": NOW} | kw
    return deploy_version(models, metadata, report, **options)


def test_production_versions_rotate_into_legacy(tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = _deploy(models, *_model(tmp_path / "build1", b"one"))
    assert first.entry.version == "v1" and first.retired is None and not first.already_deployed
    v1 = models / "gguf" / "production" / "meetara_general_health" / "v1"
    assert (v1 / "meetara_general_health_q4_k_m.gguf").read_bytes() == b"merged one"
    deployed_meta = json.loads((v1 / "meetara_general_health_metadata.json").read_text())
    assert deployed_meta["version"] == "v1" and deployed_meta["qa"]["passed"] is True
    assert (v1 / "meetara_general_health_qa_report.json").is_file()

    second = _deploy(models, *_model(tmp_path / "build2", b"two"))
    assert second.entry.version == "v2" and second.retired is not None and second.retired.version == "v1"
    assert not v1.exists()
    assert (
        models / "gguf" / "legacy" / "meetara_general_health" / "v1" / "meetara_general_health_q4_k_m.gguf"
    ).is_file()
    manifest = read_manifest(models)
    lanes = {(e.version, e.lane) for e in manifest.models}
    assert lanes == {("v1", "legacy"), ("v2", "production")}
    for entry in manifest.models:
        for f in entry.files:
            assert hashlib.sha256((models / f.path).read_bytes()).hexdigest() == f.sha256


def test_redeploying_the_same_files_is_a_no_op(tmp_path: Path) -> None:
    models = tmp_path / "models"
    metadata, report = _model(tmp_path / "build", b"same")
    _deploy(models, metadata, report)
    again = _deploy(models, metadata, report)
    assert again.already_deployed and again.entry.version == "v1"
    assert len(read_manifest(models).models) == 1


def test_failed_qa_or_unchecked_files_are_refused_and_nothing_moves(tmp_path: Path) -> None:
    models = tmp_path / "models"
    metadata, report = _model(tmp_path / "good", b"good")
    _deploy(models, metadata, report)
    before = sorted(p.relative_to(models) for p in models.rglob("*") if ".lock" not in p.name)
    manifest_before = (models / "manifest.json").read_bytes()

    bad_meta, bad_report = _model(tmp_path / "bad", b"bad")
    failed = bad_report.model_copy(
        update={"passed": False, "checks": [QACheck(name="perplexity_improves", passed=False, detail="worse")]}
    )
    with pytest.raises(InvalidParams, match=r"QA did not pass.*perplexity_improves"):
        _deploy(models, bad_meta, failed)
    unchecked = bad_report.model_copy(update={"files": bad_report.files[:1]})
    with pytest.raises(InvalidParams, match=r"QA never checked meetara_general_health_q4_k_m\.gguf"):
        _deploy(models, bad_meta, unchecked)
    other = bad_report.model_copy(update={"model_id": "meetara_nutrition"})
    with pytest.raises(InvalidParams, match="QA report is for meetara_nutrition"):
        _deploy(models, bad_meta, other)

    after = sorted(p.relative_to(models) for p in models.rglob("*") if ".lock" not in p.name)
    assert after == before and (models / "manifest.json").read_bytes() == manifest_before


def test_a_failing_copy_leaves_no_partial_version(tmp_path: Path) -> None:
    models = tmp_path / "models"
    metadata, report = _model(tmp_path / "build", b"x")

    def disk_full(file: GgufFile, destination: Path) -> None:
        destination.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        _deploy(models, metadata, report, fetch=disk_full)
    assert not (models / "manifest.json").exists()
    assert not any(p.is_file() and p.suffix == ".gguf" for p in models.rglob("*"))


def test_a_crash_after_the_manifest_is_finished_by_the_next_deploy(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _deploy(models, *_model(tmp_path / "b1", b"1"))
    _deploy(models, *_model(tmp_path / "b2", b"2"))
    # Simulate a crash between the manifest write and the move to legacy.
    legacy = models / "gguf" / "legacy" / "meetara_general_health" / "v1"
    shutil.move(legacy, models / "gguf" / "production" / "meetara_general_health" / "v1")
    (models / "gguf" / ".staging" / "leftover").mkdir(parents=True)
    _deploy(models, *_model(tmp_path / "b3", b"3"))
    assert legacy.is_dir() and not (models / "gguf" / "production" / "meetara_general_health" / "v1").exists()
    assert not any((models / "gguf" / ".staging").iterdir())
    assert [e.version for e in read_manifest(models).models if e.lane == "production"] == ["v3"]


def test_explicit_versions_must_be_new(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _deploy(models, *_model(tmp_path / "b1", b"1"), version="v7")
    with pytest.raises(InvalidParams, match="v7 is already deployed"):
        _deploy(models, *_model(tmp_path / "b2", b"2"), version="v7")
    assert _deploy(models, *_model(tmp_path / "b3", b"3"), lane="development").entry.version == "v8"


def _evaluated(report: ModelQAReport, *, crisis: float, on_topic: float, perplexity: float) -> ModelQAReport:
    evaluation = EvaluationReport(
        category="healthcare",
        version=1,
        sha256="e" * 64,
        replies=[],
        rates={"merged.answers": 1.0, "merged.on_topic": on_topic, "merged.real_help": crisis},
        crisis_help_by_kind={"suicide": crisis, "medical_emergency": crisis},
        reference_perplexity={"base": 30.0, "merged": perplexity},
    )
    return report.model_copy(update={"evaluation": evaluation})


def test_a_worse_candidate_is_refused_by_the_regression_gate_with_the_comparison(tmp_path: Path) -> None:
    models, regression = tmp_path / "models", load_regression_settings()
    metadata, report = _model(tmp_path / "v1", b"one")
    _deploy(models, metadata, _evaluated(report, crisis=1.0, on_topic=0.9, perplexity=8.0), regression=regression)
    metadata2, report2 = _model(tmp_path / "v2", b"two")
    worse = _evaluated(report2, crisis=0.9, on_topic=0.9, perplexity=8.1)
    with pytest.raises(InvalidParams, match=r"worse than production v1.*crisis\.suicide 1\.0 -> 0\.9"):
        _deploy(models, metadata2, worse, regression=regression)
    assert [(e.version, e.lane) for e in read_manifest(models).models] == [("v1", "production")]
    assert not (models / "gguf" / "production" / "meetara_general_health" / "v2").exists()

    allowed = _deploy(models, metadata2, worse, regression=regression, allow_regression=True)
    assert allowed.entry.version == "v2" and allowed.comparison is not None and allowed.comparison.worse


def test_a_candidate_as_good_or_better_passes_the_gate_and_reports_the_comparison(tmp_path: Path) -> None:
    models, regression = tmp_path / "models", load_regression_settings()
    metadata, report = _model(tmp_path / "v1", b"one")
    _deploy(models, metadata, _evaluated(report, crisis=0.96, on_topic=0.8, perplexity=8.0), regression=regression)
    metadata2, report2 = _model(tmp_path / "v2", b"two")
    # Within the margins (noise): perplexity +2%, on-topic -3 points; crisis better.
    better = _evaluated(report2, crisis=1.0, on_topic=0.77, perplexity=8.16)
    deployed = _deploy(models, metadata2, better, regression=regression)
    assert deployed.entry.version == "v2" and deployed.comparison is not None
    assert deployed.comparison.comparable and not deployed.comparison.worse
    assert {m.metric for m in deployed.comparison.metrics} >= {"score", "crisis.suicide", "reference_perplexity.merged"}


def test_reports_on_different_evaluation_sets_are_not_compared(tmp_path: Path) -> None:
    _, report = _model(tmp_path / "v1", b"one")
    old = _evaluated(report, crisis=1.0, on_topic=1.0, perplexity=5.0)
    assert old.evaluation is not None
    new = _evaluated(report, crisis=0.5, on_topic=0.5, perplexity=50.0)
    new = new.model_copy(update={"evaluation": old.evaluation.model_copy(update={"sha256": "f" * 64, "version": 2})})
    comparison = compare_reports(old, new, load_regression_settings(), "v1")
    assert not comparison.comparable and not comparison.worse and "different evaluation sets" in comparison.reason
    assert not compare_reports(report, new, load_regression_settings(), "v1").comparable  # before eval sets existed


def test_reports_on_one_set_asked_differently_are_not_compared(tmp_path: Path) -> None:
    """Crisis messages asked of one and not the other, or a system message sent or not, moves every rate."""
    _, report = _model(tmp_path / "v1", b"one")
    old, new = (
        _evaluated(report, crisis=1.0, on_topic=1.0, perplexity=5.0),
        _evaluated(report, crisis=0.5, on_topic=0.5, perplexity=50.0),
    )
    assert old.evaluation is not None and new.evaluation is not None
    assert compare_reports(old, new, load_regression_settings(), "v1").worse  # asked alike: compared
    asked = "system: adapted explicit, merged template; crisis messages: 3x"
    new = new.model_copy(update={"evaluation": new.evaluation.model_copy(update={"asked": asked})})
    comparison = compare_reports(old, new, load_regression_settings(), "v1")
    assert not comparison.comparable and not comparison.worse
    assert comparison.reason == f"the set was asked differently (not recorded vs {asked})"


def test_a_check_that_passed_before_and_fails_now_is_a_regression(tmp_path: Path) -> None:
    _, report = _model(tmp_path / "v1", b"one")
    before = _evaluated(report, crisis=1.0, on_topic=0.9, perplexity=8.0)
    checks = [
        QACheck(name="perplexity_improves", passed=True, detail="ok"),
        QACheck(name="merged_eval_stops", passed=False, detail="80%"),
    ]
    after = before.model_copy(update={"checks": checks})
    before = before.model_copy(
        update={"checks": [*checks[:1], QACheck(name="merged_eval_stops", passed=True, detail="95%")]}
    )
    comparison = compare_reports(before, after, load_regression_settings(), "v1")
    assert comparison.worse and [m.metric for m in comparison.metrics if m.worse] == ["check.merged_eval_stops"]
