"""Text signals shared by generation and QA: crisis cues, real-help pointers, feelings, PII.

Loaded from ``configs/signals.yaml`` so the safety vocabulary lives in one reviewed place.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

__all__ = ["CrisisKind", "PiiMatch", "Signals", "load_signals"]

CrisisKind = Literal["self_harm", "medical_emergency"]


class _Pii(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str
    phone: str
    card: str
    allow: list[str]


class _SignalsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    crisis: dict[CrisisKind, list[str]]
    real_help: list[str]
    diagnosis: list[str]
    emotion_cues: dict[str, list[str]]
    acknowledgement: list[str]
    pii: _Pii


def _any(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def _words(phrases: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PiiMatch:
    kind: Literal["email", "phone", "card"]
    text: str


class Signals:
    """Compiled signal patterns."""

    def __init__(self, spec: _SignalsFile) -> None:
        self._crisis = {kind: _any(patterns) for kind, patterns in spec.crisis.items()}
        self._help = _any(spec.real_help)
        self._diagnosis = _any(spec.diagnosis)
        self._cues = {emotion: _words(cues) for emotion, cues in spec.emotion_cues.items()}
        self._ack = _any(spec.acknowledgement)
        # Cards first: a card number also looks like a phone number.
        self._pii = {
            "card": re.compile(spec.pii.card),
            "email": re.compile(spec.pii.email),
            "phone": re.compile(spec.pii.phone),
        }
        self._pii_allow = {re.sub(r"\D", "", a) for a in spec.pii.allow}

    def crisis_kind(self, text: str) -> CrisisKind | None:
        """The kind of crisis a user turn signals, if any (self-harm takes precedence)."""
        for kind in ("self_harm", "medical_emergency"):
            if self._crisis[kind].search(text):
                return kind
        return None

    def points_to_real_help(self, text: str) -> bool:
        return bool(self._help.search(text))

    def diagnoses(self, text: str) -> bool:
        return bool(self._diagnosis.search(text))

    def emotion_of(self, text: str) -> str | None:
        """The first emotion (in config order) whose cues occur in the text."""
        for emotion, pattern in self._cues.items():
            if pattern.search(text):
                return emotion
        return None

    def acknowledges_feeling(self, text: str) -> bool:
        return bool(self._ack.search(text))

    def find_pii(self, text: str) -> list[PiiMatch]:
        found: list[PiiMatch] = []
        taken: list[tuple[int, int]] = []
        for kind, pattern in self._pii.items():
            for match in pattern.finditer(text):
                start, end = match.span()
                if any(start < e and s < end for s, e in taken):
                    continue
                value = match.group(0)
                if kind != "email" and re.sub(r"\D", "", value) in self._pii_allow:
                    continue
                taken.append((start, end))
                found.append(PiiMatch(kind, value))  # type: ignore[arg-type]
        return found

    def scrub_pii(self, text: str) -> str:
        for match in self.find_pii(text):
            text = text.replace(match.text, f"[{match.kind}]")
        return text


@cache
def _load(path: str) -> Signals:
    spec = _SignalsFile.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    return Signals(spec)


def load_signals(directory: Path | None = None) -> Signals:
    """Signals from ``directory/signals.yaml`` if present, else the packaged file (cached)."""
    if directory is not None and (directory / "signals.yaml").is_file():
        return _load(str(directory / "signals.yaml"))
    return _load(str(importlib.resources.files("configs").joinpath("signals.yaml")))
