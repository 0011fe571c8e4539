"""Per-domain knowledge for the compositional generator: ``configs/material/{category}/{domain}.yaml``.

Check files by hand with ``python -m agents.data_generation.material FILE...``.
"""

from __future__ import annotations

import importlib.resources
import re
import sys
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.text.signals import CrisisKind

__all__ = ["CrisisLine", "DomainMaterial", "Topic", "load_material"]

_PHONE_OR_CARD = re.compile(r"\d[\d\s().-]{6,}\d")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def _clean(text: str) -> str:
    text = " ".join(text.split())
    if _EMAIL.search(text) or _PHONE_OR_CARD.search(text):
        raise ValueError(f"contains something that looks like personal data: {text!r}")
    return text


def _sized(text: str, low: int, high: int) -> str:
    text = _clean(text)
    n = len(text.split())
    if not low <= n <= high:
        raise ValueError(f"must have {low}-{high} words, has {n}: {text!r}")
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Topic(_Strict):
    """One subject within a domain; every advice line must fit every situation and question."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
    situations: Annotated[list[str], Field(min_length=5)]
    questions: Annotated[list[str], Field(min_length=4)]
    advice: Annotated[list[str], Field(min_length=7)]
    followups: Annotated[list[str], Field(min_length=3)]
    user_followups: Annotated[list[str], Field(min_length=2)]

    @field_validator("situations")
    @classmethod
    def _situations(cls, v: list[str]) -> list[str]:
        out = [_sized(s, 6, 35) for s in v]
        for s in out:
            if s.endswith("?"):
                raise ValueError(f"a situation is a statement, not a question: {s!r}")
        return out

    @field_validator("questions")
    @classmethod
    def _questions(cls, v: list[str]) -> list[str]:
        out = [_sized(s, 4, 25) for s in v]
        for s in out:
            if not s.endswith("?"):
                raise ValueError(f"a question must end with '?': {s!r}")
        return out

    @field_validator("advice")
    @classmethod
    def _advice(cls, v: list[str]) -> list[str]:
        out = [_sized(s, 8, 50) for s in v]
        for s in out:
            if s.endswith("?"):
                raise ValueError(f"advice is a statement, not a question: {s!r}")
        return out

    @field_validator("followups")
    @classmethod
    def _followups(cls, v: list[str]) -> list[str]:
        out = [_sized(s, 4, 25) for s in v]
        for s in out:
            if not s.endswith("?"):
                raise ValueError(f"a follow-up must be a question ending with '?': {s!r}")
        return out

    @field_validator("user_followups")
    @classmethod
    def _user_followups(cls, v: list[str]) -> list[str]:
        return [_sized(s, 4, 30) for s in v]


class CrisisLine(_Strict):
    """A user message with crisis signals, in this domain's context."""

    kind: CrisisKind
    text: str

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return _sized(v, 6, 40)


class DomainMaterial(_Strict):
    """Everything the compositional generator knows about one domain."""

    domain: str
    role: Annotated[str, Field(min_length=3, max_length=60)]
    personas: Annotated[list[str], Field(min_length=8)]
    topics: Annotated[list[Topic], Field(min_length=6)]
    referral: str
    crisis: list[CrisisLine] = Field(default_factory=list)

    @field_validator("personas")
    @classmethod
    def _personas(cls, v: list[str]) -> list[str]:
        out = [_sized(p, 2, 10) for p in v]
        for p in out:
            if not re.match(r"^(a|an) ", p):
                raise ValueError(f"a persona starts with 'a ' or 'an ': {p!r}")
        return out

    @field_validator("referral")
    @classmethod
    def _referral(cls, v: str) -> str:
        return _sized(v, 8, 45)

    @field_validator("topics")
    @classmethod
    def _unique_topics(cls, v: list[Topic]) -> list[Topic]:
        names = [t.name for t in v]
        if len(set(names)) != len(names):
            raise ValueError(f"topic names repeat: {names}")
        return v


def material_path(category: str, domain: str, root: Path | None = None) -> Path:
    base = root or Path(str(importlib.resources.files("configs"))) / "material"
    return base / category / f"{domain}.yaml"


def load_material(category: str, domain: str, root: Path | None = None) -> DomainMaterial:
    """Load and validate one domain's material."""
    path = material_path(category, domain, root)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    material = DomainMaterial.model_validate(data)
    if material.domain != domain:
        raise ValueError(f"{path} declares domain {material.domain!r}")
    return material


def _check(paths: list[str]) -> int:
    failed = 0
    for name in paths:
        path = Path(name)
        try:
            material = DomainMaterial.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (ValidationError, yaml.YAMLError, OSError) as exc:
            failed += 1
            print(f"FAIL {path}\n{exc}\n")
            continue
        counts = {
            "topics": len(material.topics),
            "situations": sum(len(t.situations) for t in material.topics),
            "advice": sum(len(t.advice) for t in material.topics),
            "crisis": len(material.crisis),
        }
        print(f"ok   {path} {counts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_check(sys.argv[1:]))
