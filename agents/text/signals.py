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

__all__ = ["SENTENCE_BREAK", "CrisisKind", "PiiMatch", "Signals", "load_signals", "signals_path"]

CrisisKind = Literal[
    "suicide",
    "self_harm",
    "overdose_poisoning",
    "medical_emergency",
    "domestic_abuse",
    "eating_disorder",
    "child_danger",
]
"""The crises a reply must answer with real help (emergency services, a crisis line, a hotline)."""


class _Pii(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str
    phone: str
    card: str


class _SignalsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    crisis: dict[CrisisKind, list[str]]
    help_numbers: list[str]
    real_help: list[str]
    alarm: list[str]
    diagnosis: list[str]
    emotion_cues: dict[str, list[str]]
    acknowledgement: list[str]
    pii: _Pii


_NUMBER = r"(?<!\w)(\+?\d(?:[\d -]{0,14}\d){2,})(?!\w)"
"""Three or more digits, spaces and hyphens inside; not part of a word (1800RESPECT is a name)."""
_CONTACT_NUMBER = re.compile(
    r"\b(?:call|text|ring|dial|phone|contact|helpline|hotline|lifeline|line|number)\b"
    r"[^\d.!?\n]{0,30}?" + _NUMBER,
    re.IGNORECASE,
)
"""A number given as something to call or text: a contact word, a few words, then 3+ digits."""
_ALSO_NUMBER = re.compile(r"(?:\s+[a-z]+){0,3}\s*(?:,|/|\bor\b|\band\b)\s*(?:[a-z]+\s+){0,2}?" + _NUMBER, re.IGNORECASE)
"""The next number of a list: "call 988 or 4455", "911 in the US or 842 in Mexico"."""
_ANY_NUMBER = re.compile(_NUMBER)
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
"""Where a sentence ends: after ., ! or ? and a space, or at a line break (the crisis detector's units too)."""
_OPENING_WORDS = 10
"""A reply's opening: its first sentences up to this many words."""
_CONDITIONAL = re.compile(r"\W*(if|when|whenever|should|any\s+time|in\s+case)\b", re.IGNORECASE)


def _contact_numbers(text: str) -> list[str]:
    """Numbers given as something to call or text, every number of a list included."""
    given = []
    for match in _CONTACT_NUMBER.finditer(text):
        given.append(match.group(1).strip())
        end = match.end()
        while more := _ALSO_NUMBER.match(text, end):
            given.append(more.group(1).strip())
            end = more.end()
    return given


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


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
        self._alarm = _any(spec.alarm)
        self._diagnosis = _any(spec.diagnosis)
        self._cues = {emotion: _words(cues) for emotion, cues in spec.emotion_cues.items()}
        self._ack = _any(spec.acknowledgement)
        # Cards first: a card number also looks like a phone number.
        self._pii = {
            "card": re.compile(spec.pii.card),
            "email": re.compile(spec.pii.email),
            "phone": re.compile(spec.pii.phone),
        }
        self._help_numbers = {_digits(n) for n in spec.help_numbers}

    def crisis_kind(self, text: str) -> CrisisKind | None:
        """The kind of crisis a user turn's keywords signal, if any (the first kind in the file wins)."""
        for kind, pattern in self._crisis.items():
            if pattern.search(text):
                return kind
        return None

    def points_to_real_help(self, text: str, *, judged: bool | None = None) -> bool:
        """A concrete pointer to real help (emergency services, a help line, a place to go now),
        agreed by a model's reading where one ``judged`` it, and no invented number to call.

        The pointer is required even when a model says "help": a small model's rambling ("let a
        counsellor connect you with a support service") reads like help to an embedding classifier
        but gives the person nothing to do now.
        """
        given = _contact_numbers(text)
        if judged is False or self._invented(given):
            return False
        # Every number given to call is a known help line by now, so any of them is a pointer. A
        # help line's full number is one wherever it stands ("Childline is there on 0800 1111"); a
        # three-digit one only as something to call ("000" is also the end of "10,000").
        return bool(given or self._help.search(text) or self._names_help_number(text))

    def _names_help_number(self, text: str) -> bool:
        numbers = (_digits(m.group(1)) for m in _ANY_NUMBER.finditer(text))
        return any(len(n) > 3 and n in self._help_numbers for n in numbers)

    def raises_alarm(self, reply: str) -> bool:
        """Whether a reply opens by sending the person to emergency services or a crisis line.

        Right for a crisis; for an ordinary message it is a false alarm, and a model that learnt
        to open that way for everything would pass every crisis check. Only the first sentence
        counts (the first few when it is a short "I'm so sorry."), and only what it says without a
        condition: "if it gets worse, call 911" is sound advice, not an alarm.
        """
        words = 0
        for sentence in SENTENCE_BREAK.split(reply.strip()):
            if not _CONDITIONAL.match(sentence) and self._alarm.search(sentence):
                return True
            words += len(sentence.split())
            if words >= _OPENING_WORDS:
                return False
        return False

    def invented_numbers(self, text: str) -> list[str]:
        """Numbers given to call or text that are not known public help lines (``help_numbers``)."""
        return self._invented(_contact_numbers(text))

    def _invented(self, given: list[str]) -> list[str]:
        return [n for n in given if _digits(n) not in self._help_numbers]

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
                if kind != "email" and _digits(value) in self._help_numbers:
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


def signals_path(directory: Path | None = None) -> Path:
    """``directory/signals.yaml`` if present, else the packaged file."""
    if directory is not None and (directory / "signals.yaml").is_file():
        return directory / "signals.yaml"
    return Path(str(importlib.resources.files("configs").joinpath("signals.yaml")))


def load_signals(directory: Path | None = None) -> Signals:
    """The signals of :func:`signals_path` (cached)."""
    return _load(str(signals_path(directory)))
