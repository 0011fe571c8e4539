"""Every scope's files land in MISSION.md's layout with its names (D, C, A and B lanes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.gguf_creation.build import BuildPlan, build_files
from agents.llm.adapter_file import AdapterFile
from agents.llm.base_model import resolve_base_model
from agents.llm.layout import VersionLayout, domains_of, model_layouts, trained_dir
from protocol import ArtifactRef, InvalidParams
from protocol.agents.gguf_creation import CreateGgufInput
from runtime import load_catalog

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize(
    ("scope", "target", "expected"),
    [
        (
            "domain",
            "nutrition",
            [
                "D_domain_specific/healthcare/meetara_nutrition_Q4_K_M.gguf",
                "D_domain_specific/healthcare/meetara_nutrition_lora_f16.gguf",
            ],
        ),
        (
            "category",
            "creative",
            [
                "C_category_specific/creative/meetara_creative_category_Q4_K_M.gguf",
                "C_category_specific/creative/meetara_creative_category_lora_f16.gguf",
            ],
        ),
        (
            "universal",
            "universal",
            [
                "A_universal_full/meetara_universal_full_Q4_K_M.gguf",
                "A_universal_full/meetara_universal_full_lora_f16.gguf",
                "B_universal_lite/meetara_universal_lite_Q3_K_S.gguf",
            ],
        ),
    ],
)
def test_files_and_names_follow_the_mission_layout(
    scope: str,
    target: str,
    expected: list[str],
    trained_adapter: AdapterFile,
    tiny_gguf: Path,
    model_cache: Path,
    tmp_path: Path,
) -> None:
    catalog = load_catalog()
    request = CreateGgufInput(
        scope=scope,  # type: ignore[arg-type]
        target=target,
        adapter=ArtifactRef(uri="file:///unused", sha256="0" * 64, size=0),
    )
    plan = BuildPlan(
        request=request,
        base=resolve_base_model(str(tiny_gguf)),
        adapter=trained_adapter,
        layouts=model_layouts(scope, target, catalog),
        build_root=tmp_path / "models",
        work_dir=tmp_path / "work",
        cache_dir=model_cache,
    )
    built = build_files(plan)
    written = sorted(
        str(Path(f.path).relative_to(tmp_path / "models")) for files in built.per_model.values() for f in files
    )
    assert written == sorted(expected)
    assert not list((tmp_path / "work").glob("*.gguf"))  # the F16 intermediate is not kept by default


def test_scopes_name_their_training_folder_and_domains() -> None:
    catalog = load_catalog()
    data = Path("data")
    assert trained_dir(data, "domain", "nutrition", catalog) == data / "models/trained/healthcare/nutrition"
    assert trained_dir(data, "category", "creative", catalog) == data / "models/trained/creative/_category"
    assert trained_dir(data, "universal", "universal", catalog) == data / "models/trained/universal"
    assert domains_of("category", "technology", catalog) == [
        "programming",
        "ai_ml",
        "cybersecurity",
        "data_analysis",
        "tech_support",
        "software_development",
    ]
    assert len(domains_of("universal", "universal", catalog)) == 62
    for scope, target in (("domain", "../etc"), ("category", "nutrition"), ("universal", "all")):
        with pytest.raises(InvalidParams):
            trained_dir(data, scope, target, catalog)


def test_layout_and_deployed_versions_name_their_records() -> None:
    [domain] = model_layouts("domain", "nutrition", load_catalog())
    assert (domain.metadata_name, domain.qa_report_name) == ("nutrition_metadata.json", "nutrition_qa_report.json")
    version = VersionLayout("production", "meetara_nutrition", "v3")
    assert version.folder == Path("gguf/production/meetara_nutrition/v3")
    assert version.metadata_path == version.folder / "meetara_nutrition_metadata.json"
    assert version.qa_report_path == version.folder / "meetara_nutrition_qa_report.json"
    assert version.in_lane("legacy").folder == Path("gguf/legacy/meetara_nutrition/v3")
