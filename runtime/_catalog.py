"""The domain catalogue, tiers, provider prices and budgets: YAML in ``configs/``, validated at load."""

from __future__ import annotations

import difflib
import importlib.resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol import InvalidParams, MeetaraError
from protocol.agents.gpu_optimization import ModelShape

__all__ = [
    "Budgets",
    "Catalog",
    "CatalogError",
    "Category",
    "Domain",
    "Provider",
    "Tier",
    "TrainingDefaults",
    "load_catalog",
    "load_config",
    "read_config",
]

M = TypeVar("M", bound=BaseModel)

_FILES = ("domains.yaml", "tiers.yaml", "providers.yaml", "budgets.yaml")
Usd = Annotated[float, Field(ge=0)]


class CatalogError(MeetaraError):
    """A config file is missing, not YAML, or fails validation (the message names the file)."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Domain(_Config):
    """One conversational domain."""

    name: str
    category: str
    description: str
    scope: str
    quality_target: float
    crisis_safety: bool

    @property
    def subjects(self) -> list[str]:
        """The scope as a list of subjects."""
        return [s.strip() for s in self.scope.split(",") if s.strip()]


class _DomainFile(_Config):
    description: str = Field(min_length=10)
    scope: str = Field(min_length=10)


class _CategoryFile(_Config):
    quality_target: float = Field(gt=0, le=100)
    crisis_safety: bool = False
    domains: dict[str, _DomainFile]


class Category(_Config):
    """A group of domains sharing a quality target."""

    name: str
    quality_target: float
    crisis_safety: bool
    domains: tuple[str, ...]


class Tier(_Config):
    """A training tier: target GPU, sizes, and the base model it is planned and priced for."""

    name: str = ""
    description: str
    gpu: str
    samples: int = Field(gt=0)
    max_steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    base_model: str
    """The base this tier is sized for (a hub id; a job picks its own base with ``--base-model``)."""
    base_shape: ModelShape
    """That base's dimensions, for memory and time estimates without downloading it."""


class TrainingDefaults(_Config):
    """LoRA and training defaults shared by every tier."""

    lora_r: int = Field(gt=0)
    lora_alpha: int = Field(gt=0)
    lora_dropout: float = Field(ge=0, lt=1)
    learning_rate: float = Field(gt=0)
    sequence_length: int = Field(gt=0)
    quantization: str


class Gpu(_Config):
    memory_gb: float = Field(gt=0)
    peak_tflops: float = Field(gt=0)


class Provider(_Config):
    """A GPU provider and its prices."""

    name: str = ""
    display_name: str
    spot: bool
    max_session_hours: float | None = Field(default=None, gt=0)
    prices: dict[str, Usd]


class Budgets(_Config):
    """Spending limits and alert thresholds."""

    day: Usd
    week: Usd
    month: Usd
    alert_thresholds: tuple[float, ...]
    stop_threshold: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Budgets:
        if list(self.alert_thresholds) != sorted(set(self.alert_thresholds)):
            raise ValueError("alert_thresholds must be strictly increasing")
        if any(not 0 < t <= 1 for t in self.alert_thresholds):
            raise ValueError("alert_thresholds must lie in (0, 1]")
        return self


class _DomainsFile(_Config):
    categories: dict[str, _CategoryFile]


class _TiersFile(_Config):
    tiers: dict[str, Tier]
    defaults: TrainingDefaults


class _ProvidersFile(_Config):
    gpus: dict[str, Gpu]
    providers: dict[str, Provider]
    local: dict[str, Usd]


class _BudgetsFile(_Config):
    budgets: dict[str, Usd]
    alert_thresholds: tuple[float, ...]
    stop_threshold: float


class Catalog(_Config):
    """Everything in ``configs/``, cross-checked."""

    categories: dict[str, Category]
    domains: dict[str, Domain]
    tiers: dict[str, Tier]
    training: TrainingDefaults
    gpus: dict[str, Gpu]
    providers: dict[str, Provider]
    local_usd_per_hour: Usd
    budgets: Budgets

    @model_validator(mode="after")
    def _cross_check(self) -> Catalog:
        for tier in self.tiers.values():
            if tier.gpu not in self.gpus:
                raise ValueError(f"tier {tier.name!r} names unknown GPU {tier.gpu!r}")
        for provider in self.providers.values():
            unknown = set(provider.prices) - set(self.gpus)
            if unknown:
                raise ValueError(f"provider {provider.name!r} prices unknown GPUs {sorted(unknown)}")
        return self

    def domain(self, name: str) -> Domain:
        """The domain called ``name``; ``InvalidParams`` with close matches otherwise."""
        try:
            return self.domains[name]
        except KeyError:
            raise _unknown("domain", name, self.domains) from None

    def category(self, name: str) -> Category:
        """The category called ``name``; ``InvalidParams`` with close matches otherwise."""
        try:
            return self.categories[name]
        except KeyError:
            raise _unknown("category", name, self.categories) from None

    def tier(self, name: str) -> Tier:
        try:
            return self.tiers[name]
        except KeyError:
            raise _unknown("tier", name, self.tiers) from None


def _unknown(kind: str, name: str, known: dict[str, Any]) -> InvalidParams:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return InvalidParams(f"unknown {kind} {name!r}{hint}", data={"kind": kind, "name": name, "suggestions": close})


def read_config(directory: Path | None, filename: str) -> Any:
    """A YAML file of ``directory`` when it has one, else the packaged ``configs/`` one, parsed."""
    if directory is not None and (directory / filename).is_file():
        path: Any = directory / filename
    else:
        path = importlib.resources.files("configs").joinpath(filename)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"config file missing: {path}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path} is not valid YAML: {exc}") from None


def load_config(model: type[M], directory: Path | None, filename: str) -> M:
    """``read_config`` validated into ``model``; ``CatalogError`` names the file and the problems."""
    return _validate(model, read_config(directory, filename), filename)  # type: ignore[no-any-return]


def _validate(model: type[BaseModel], data: Any, filename: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        raise CatalogError(f"{filename} is invalid: {problems}") from None


def load_catalog(directory: Path | None = None) -> Catalog:
    """Load and validate the catalogue; files in ``directory`` replace the packaged ones.

    Raises:
        CatalogError: a file is missing, malformed or inconsistent (the message says which).
    """
    raw = {name: read_config(directory, name) for name in _FILES}
    domains_file: _DomainsFile = _validate(_DomainsFile, raw["domains.yaml"], "domains.yaml")
    tiers_file: _TiersFile = _validate(_TiersFile, raw["tiers.yaml"], "tiers.yaml")
    providers_file: _ProvidersFile = _validate(_ProvidersFile, raw["providers.yaml"], "providers.yaml")
    budgets_file: _BudgetsFile = _validate(_BudgetsFile, raw["budgets.yaml"], "budgets.yaml")

    categories: dict[str, Category] = {}
    domains: dict[str, Domain] = {}
    for cat_name, cat in domains_file.categories.items():
        categories[cat_name] = Category(
            name=cat_name,
            quality_target=cat.quality_target,
            crisis_safety=cat.crisis_safety,
            domains=tuple(cat.domains),
        )
        for dom_name, spec in cat.domains.items():
            if dom_name in domains:
                raise CatalogError(
                    f"domains.yaml: domain {dom_name!r} is listed in both "
                    f"{domains[dom_name].category!r} and {cat_name!r}"
                )
            domains[dom_name] = Domain(
                name=dom_name,
                category=cat_name,
                description=spec.description,
                scope=spec.scope,
                quality_target=cat.quality_target,
                crisis_safety=cat.crisis_safety,
            )
    budgets = budgets_file.budgets
    missing = {"day", "week", "month"} - set(budgets)
    if missing:
        raise CatalogError(f"budgets.yaml: missing budgets {sorted(missing)}")
    try:
        return Catalog(
            categories=categories,
            domains=domains,
            tiers={k: v.model_copy(update={"name": k}) for k, v in tiers_file.tiers.items()},
            training=tiers_file.defaults,
            gpus=providers_file.gpus,
            providers={k: v.model_copy(update={"name": k}) for k, v in providers_file.providers.items()},
            local_usd_per_hour=providers_file.local.get("usd_per_hour", 0.0),
            budgets=Budgets(
                day=budgets["day"],
                week=budgets["week"],
                month=budgets["month"],
                alert_thresholds=budgets_file.alert_thresholds,
                stop_threshold=budgets_file.stop_threshold,
            ),
        )
    except ValidationError as exc:
        raise CatalogError(f"configs are inconsistent: {exc.errors(include_input=False)[0]['msg']}") from None
