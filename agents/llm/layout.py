"""Where models live: the training folder of a run and the deployed-model layout (MISSION.md).

```
data/models/trained/{category}/{domain}/                  adapter, checkpoints (domain scope)
data/models/trained/{category}/_category/                 category scope
data/models/trained/universal/                            universal scope
models/D_domain_specific/{category}/meetara_{domain}_{quant}.gguf      + {domain}_metadata.json
models/C_category_specific/{category}/meetara_{category}_category_{quant}.gguf
models/A_universal_full/meetara_universal_full_{quant}.gguf
models/B_universal_lite/meetara_universal_lite_{quant}.gguf
models/gguf/{production,development,legacy}/{model_id}/{version}/   + {model_id}_metadata.json
models/manifest.json
```
Every name here comes from the catalog (validated names), never from free text. Every file name of
the models folder is made here, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from protocol import InvalidParams
from protocol.agents.gguf_creation import Lane, ManifestEntry
from runtime import Catalog

__all__ = [
    "MANIFEST",
    "STAGING",
    "ModelLayout",
    "VersionLayout",
    "domains_of",
    "layout_of",
    "model_layouts",
    "trained_dir",
]

MANIFEST = Path("manifest.json")
"""The deployed versions, relative to the models folder."""
STAGING = Path("gguf") / ".staging"
"""Where a deploy assembles a version before renaming it into place (same filesystem)."""


def _metadata_name(stem: str) -> str:
    return f"{stem}_metadata.json"


def _qa_report_name(stem: str) -> str:
    return f"{stem}_qa_report.json"


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """One model's folder (relative to the models folder) and file names."""

    model_id: str
    folder: Path
    stem: str
    """Names the metadata and QA report: ``{stem}_metadata.json`` (the target, not the model id)."""
    lite: bool = False

    def model_file(self, quant: str) -> str:
        """``meetara_general_health_Q4_K_M.gguf``: the quantization type as llama.cpp writes it.

        Deployments made before this naming keep their lower-case names: the manifest records
        every file's path, nothing rebuilds it from this.
        """
        return f"{self.model_id}_{quant.upper()}.gguf"

    def adapter_file(self, dtype: str) -> str:
        return f"{self.model_id}_lora_{dtype.lower()}.gguf"

    @property
    def metadata_name(self) -> str:
        return _metadata_name(self.stem)

    @property
    def qa_report_name(self) -> str:
        return _qa_report_name(self.stem)


@dataclass(frozen=True, slots=True)
class VersionLayout:
    """One deployed version's folder, relative to the models folder, and the records beside its files.

    The model files keep the names the build gave them (``ModelLayout.model_file``…).
    """

    lane: Lane
    model_id: str
    version: str

    @classmethod
    def of(cls, entry: ManifestEntry) -> VersionLayout:
        return cls(entry.lane, entry.model_id, entry.version)

    def in_lane(self, lane: Lane) -> VersionLayout:
        """The same version's folder once moved to ``lane`` (production → legacy on retirement)."""
        return replace(self, lane=lane)

    @property
    def folder(self) -> Path:
        return Path("gguf") / self.lane / self.model_id / self.version

    @property
    def metadata_path(self) -> Path:
        return self.folder / _metadata_name(self.model_id)

    @property
    def qa_report_path(self) -> Path:
        return self.folder / _qa_report_name(self.model_id)

    @property
    def card_path(self) -> Path:
        """The model card."""
        return self.folder / "README.md"

    @property
    def modelfile_path(self) -> Path:
        """Ollama's Modelfile for the merged model."""
        return self.folder / "Modelfile"

    @property
    def adapter_modelfile_path(self) -> Path:
        """Ollama's Modelfile for the base model with the LoRA adapter."""
        return self.folder / "Modelfile.adapter"


def _check_scope(scope: str, target: str, catalog: Catalog) -> None:
    if scope == "domain":
        catalog.domain(target)
    elif scope == "category":
        catalog.category(target)
    elif scope != "universal" or target != "universal":
        raise InvalidParams(f"scope {scope!r} with target {target!r}: the universal scope takes target 'universal'")


def domains_of(scope: str, target: str, catalog: Catalog) -> list[str]:
    """The domains whose data a model of this scope is trained on."""
    _check_scope(scope, target, catalog)
    if scope == "domain":
        return [target]
    if scope == "category":
        return [d.name for d in catalog.domains.values() if d.category == target]
    return list(catalog.domains)


def trained_dir(data_dir: Path, scope: str, target: str, catalog: Catalog) -> Path:
    _check_scope(scope, target, catalog)
    root = data_dir / "models" / "trained"
    if scope == "domain":
        return root / catalog.domain(target).category / target
    if scope == "category":
        return root / target / "_category"
    return root / "universal"


def builds_root(data_dir: Path) -> Path:
    """Where models are built and checked before deploy: the layout's folders, under the data folder.

    The models folder changes only when a QA-passed model is deployed, so a failed or half-done
    build never replaces the files users run.
    """
    return data_dir / "models" / "builds"


def build_folder(data_dir: Path, layout: ModelLayout) -> Path:
    return builds_root(data_dir) / layout.folder


def model_layouts(scope: str, target: str, catalog: Catalog) -> list[ModelLayout]:
    """The model(s) a job of this scope produces: one, or for universal the full (A) and lite (B) pair."""
    _check_scope(scope, target, catalog)
    if scope == "domain":
        category = catalog.domain(target).category
        return [ModelLayout(f"meetara_{target}", Path("D_domain_specific") / category, target)]
    if scope == "category":
        return [ModelLayout(f"meetara_{target}_category", Path("C_category_specific") / target, f"{target}_category")]
    return [
        ModelLayout("meetara_universal_full", Path("A_universal_full"), "universal_full"),
        ModelLayout("meetara_universal_lite", Path("B_universal_lite"), "universal_lite", lite=True),
    ]


def layout_of(model_id: str, scope: str, domain: str | None, category: str | None, catalog: Catalog) -> ModelLayout:
    """The layout of a built model, from what its metadata records."""
    target = domain or category or "universal"
    for layout in model_layouts(scope, target, catalog):
        if layout.model_id == model_id:
            return layout
    raise InvalidParams(f"{model_id} is not a model of the {scope} scope {target!r}")
