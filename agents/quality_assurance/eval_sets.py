"""The hand-written evaluation sets, ``configs/eval/{category}.yaml``.

Written by people, independently of the generator's material, and never trained on
(``tests/data/test_eval_sets.py`` proves no evaluation text reaches a training set): what the
model says to them is evidence about the model, not about how well it memorised templates.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.text.signals import CrisisKind
from protocol.agents.quality_assurance import EvalItemKind

__all__ = ["EvalItem", "EvalSet", "load_eval_set"]


class EvalItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1)
    kind: EvalItemKind
    text: str = Field(min_length=3)
    domain: str | None = None
    """The domain a question or emotional message is mainly about."""
    crisis_kind: CrisisKind | None = None
    reference: str | None = None
    """An ideal reply, written with the message (questions and emotional messages)."""

    @model_validator(mode="after")
    def _consistent(self) -> EvalItem:
        if (self.kind == "crisis") != (self.crisis_kind is not None):
            raise ValueError(f"{self.id}: crisis_kind is set exactly for crisis items")
        if self.kind in ("off_topic", "crisis") and (self.reference or self.domain):
            raise ValueError(f"{self.id}: {self.kind} items have no domain or reference")
        return self


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(ge=1)
    category: str
    items: list[EvalItem] = Field(min_length=1)
    sha256: str = ""
    """Hash of the file it was read from (set by the loader)."""

    @model_validator(mode="after")
    def _unique(self) -> EvalSet:
        ids = [i.id for i in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.category}: duplicate item ids")
        return self


def eval_set_path(category: str, directory: Path | None = None) -> Path:
    if directory is not None and (directory / "eval" / f"{category}.yaml").is_file():
        return directory / "eval" / f"{category}.yaml"
    return Path(str(importlib.resources.files("configs").joinpath("eval", f"{category}.yaml")))


def load_eval_set(category: str, directory: Path | None = None) -> EvalSet:
    """The category's evaluation set; a clear error when there is none."""
    path = eval_set_path(category, directory)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation set for category {category!r} (expected {path})")
    raw = path.read_bytes()
    loaded = EvalSet.model_validate(yaml.safe_load(raw))
    if loaded.category != category:
        raise ValueError(f"{path} is the evaluation set of {loaded.category!r}, not {category!r}")
    return loaded.model_copy(update={"sha256": hashlib.sha256(raw).hexdigest()})
