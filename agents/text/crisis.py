"""Crisis detection by meaning: a user message that needs real help, and a reply that gives it.

Keyword patterns (``configs/signals.yaml``) catch the plain phrasings; a fine-tuned classifier
(``agents.text.crisis_model``: all-MiniLM-L6-v2 with a LoRA adapter, trained on the hand-labelled
``configs/safety/crisis_train*.yaml`` and the former held-out sets) catches the paraphrases ("I've
sorted out who gets my guitar") and tells them from look-alikes at a distance ("I overdosed once,
years ago"). A message is a crisis when either says so: a missed crisis costs far more than an
extra pointer to a helpline. Long texts are also judged sentence by sentence, because one crisis
sentence inside a paragraph about something else is diluted in the whole text. A keyword match
the classifier is sure is nothing ("I overdosed on Netflix") is overruled.

The reply judge is a logistic regression over the plain sentence embeddings of labelled replies.
The held-out set ``configs/safety/crisis_heldout.yaml`` (version 6, a fresh author, never trained
or tuned on) measures recall and precision per kind: ``bench/crisis_detector.py`` and the safety tests.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field

from agents.llm.embeddings import Embedder, default_embedder, default_model_path
from agents.text.crisis_model import CrisisModel, model_dir, read_meta, training_digest
from agents.text.signals import CrisisKind, Signals, load_signals, signals_path

__all__ = [
    "CRISIS_KINDS",
    "CrisisDetector",
    "CrisisVerdict",
    "DetectorSettings",
    "TrainingSet",
    "default_detector",
    "load_training_set",
    "ordinary_messages",
    "sentences",
    "sources_digest",
    "training_files",
]

log = structlog.get_logger(__name__)
CRISIS_KINDS: tuple[CrisisKind, ...] = get_args(CrisisKind)
_NONE = "none"
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


class TrainingSet(BaseModel):
    """``configs/safety/crisis_train.yaml`` + the former held-out sets: labelled user messages and assistant replies."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    messages: dict[CrisisKind | Literal["none"], list[str]]
    replies: dict[Literal["real_help", "no_help"], list[str]]


class TrainingSettings(BaseModel):
    """How the crisis classifier is trained (``agents.text.crisis_training``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lora_rank: int = Field(ge=1)
    lora_alpha: int = Field(ge=1)
    lora_dropout: float = Field(ge=0, lt=1)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    max_tokens: int = Field(ge=16)
    """Longer messages are also judged sentence by sentence, so the opening is enough."""
    scale: float = Field(gt=0)
    """Logits are this times the head's output on the unit sentence vector."""
    calibration_share: float = Field(gt=0, lt=0.5)
    """Held back from training, per label, to set the threshold on."""
    target_recall: float = Field(gt=0.5, lt=1)
    """The crisis threshold catches this share of the held-back crises..."""
    threshold_cap: float = Field(gt=0, lt=1)
    """...and is at most this: a message the classifier finds more likely a crisis than not is one,
    whatever a few held-back messages say (the quantile of ~170 crises moves with each of them)."""
    seed: int


class DetectorSettings(BaseModel):
    """``configs/safety/detector.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    regularisation: float = Field(gt=0)
    """Inverse regularisation strength (scikit-learn's C) of the reply judge."""
    pattern_veto: float = Field(ge=0, lt=1)
    """A keyword match is overruled when the classifier's P(crisis) is below this share of its
    threshold: slang and distance ("driving at 5pm is suicide", "I overdosed on Netflix", "ten years
    ago I attempted suicide") match the patterns, and the classifier reads them as nothing."""
    help_threshold: float = Field(gt=0, lt=1)
    """Below this probability the judge vetoes a reply that names a pointer to help (it only vetoes:
    a reply must also give something concrete to do, see ``Signals.points_to_real_help``)."""
    training: TrainingSettings


@dataclass(frozen=True, slots=True)
class CrisisVerdict:
    kind: CrisisKind | None
    """The crisis the text signals, or None."""
    score: float
    """How far the text (or its most alarming sentence) is on the crisis side; >= ``threshold`` is a crisis."""
    by_pattern: bool
    """A keyword pattern matched."""


def sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE.split(text)) if len(s.split()) >= 2]


_WHOLE_TEXT_WORDS = 50
"""Texts up to this long are judged whole; longer ones also sentence by sentence."""


def _units(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    """Each text, then its sentences when it is long, with the index of the text each came from."""
    units: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        parts = sentences(text) if len(text.split()) > _WHOLE_TEXT_WORDS else []
        for unit in [text, *parts] if len(parts) > 1 else [text]:
            units.append(unit)
            owner.append(i)
    return units, owner


def _cached_encode(embedder: Embedder, texts: list[str], cache_dir: Path | None) -> np.ndarray:
    """Embeddings of the labelled replies, kept on disk under their hash: every QA process needs them."""
    if cache_dir is None:
        return embedder.encode(texts)
    from runtime import atomic_path

    digest = hashlib.sha256("\x1f".join([embedder.identity, *texts]).encode()).hexdigest()[:32]
    path = cache_dir / f"crisis-embeddings-{digest}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape[0] == len(texts):
                return np.asarray(cached, dtype=np.float32)
        except (OSError, ValueError):
            pass  # unreadable: embed again and replace it
    vectors = embedder.encode(texts)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, vectors, allow_pickle=False)
    return vectors


class CrisisDetector:
    """Patterns plus the fine-tuned classifier for user messages; a judge for the replies to them."""

    def __init__(
        self,
        classifier: CrisisModel,
        embedder: Embedder,
        signals: Signals,
        training: TrainingSet,
        settings: DetectorSettings,
        cache_dir: Path | None = None,
    ) -> None:
        """``embedder``: plain sentence embeddings for the reply judge; ``cache_dir``: where the
        labelled replies' embeddings are kept between processes."""
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        self._classifier = classifier
        self._embedder = embedder
        self._signals = signals
        self._settings = settings
        self.threshold = classifier.meta.threshold
        self._kinds: list[CrisisKind] = [k for k in classifier.meta.labels[1:] if k in CRISIS_KINDS]
        if classifier.meta.labels[0] != _NONE or len(self._kinds) != len(classifier.meta.labels) - 1:
            raise ValueError(f"the crisis classifier's labels are not none + crisis kinds: {classifier.meta.labels}")
        replies = [t for texts in training.replies.values() for t in texts]
        helps = [label == "real_help" for label, texts in training.replies.items() for _ in texts]
        self._replies = LogisticRegression(C=settings.regularisation, max_iter=5000, class_weight="balanced").fit(
            _cached_encode(embedder, replies, cache_dir), helps
        )

    def detect(self, texts: Sequence[str]) -> list[CrisisVerdict]:
        """One verdict per text (batched: one classifier pass for all)."""
        if not texts:
            return []
        units, owner = _units(texts)
        probabilities = self._classifier.probabilities(units)
        scores = 1.0 - probabilities[:, 0]
        kinds = probabilities[:, 1:].argmax(axis=1)
        best: list[tuple[float, CrisisKind | None]] = [(-np.inf, None)] * len(texts)
        for score, predicted, i in zip(scores, kinds, owner, strict=True):
            if float(score) > best[i][0]:
                best[i] = (float(score), self._kinds[int(predicted)])
        verdicts = []
        veto = self._settings.pattern_veto * self.threshold
        for text, (score, meant) in zip(texts, best, strict=True):
            # The patterns stay unless the classifier is sure: a plain "he's choking and turning
            # blue" must not hinge on a model's threshold.
            pattern = self._signals.crisis_kind(text)
            kind: CrisisKind | None = meant if score >= self.threshold else pattern if score >= veto else None
            verdicts.append(CrisisVerdict(kind=kind, score=round(score, 4), by_pattern=pattern is not None))
        return verdicts

    def kind(self, text: str) -> CrisisKind | None:
        return self.detect([text])[0].kind

    def points_to_real_help(self, replies: Sequence[str]) -> list[bool]:
        """Whether each reply directs the person to real, immediate help (a pattern or the judge),
        giving no number that is not a known help line (a wrong number in a crisis is worse than none)."""
        if not replies:
            return []
        units, owner = _units(replies)
        help_column = list(self._replies.classes_).index(True)
        probabilities = self._replies.predict_proba(self._embedder.encode(units))[:, help_column]
        judged = [False] * len(replies)
        for probability, i in zip(probabilities, owner, strict=True):
            judged[i] = judged[i] or float(probability) >= self._settings.help_threshold
        return [self._signals.points_to_real_help(r, judged=j) for j, r in zip(judged, replies, strict=True)]


def _safety_file(directory: Path | None, name: str) -> Path:
    if directory is not None and (directory / "safety" / name).is_file():
        return directory / "safety" / name
    return Path(str(importlib.resources.files("configs").joinpath("safety", name)))


_TRAINING_FILES = (
    "crisis_train.yaml",
    "crisis_train_everyday.yaml",
    "crisis_dev.yaml",
    "crisis_dev_v2.yaml",
    "crisis_dev_v3.yaml",
    "crisis_dev_v4.yaml",
    "crisis_dev_v5.yaml",
)
"""The training set, everyday non-crises (trivia, homework, slang; another author), and the first
five held-out sets: each was measured and looked at, so trained on since."""


def training_files(directory: Path | None = None) -> list[Path]:
    """The labelled files the classifier and the reply judge are trained on, and their settings."""
    return [_safety_file(directory, name) for name in (*_TRAINING_FILES, "detector.yaml")]


def load_training_set(directory: Path | None = None) -> TrainingSet:
    """Every training file's messages and replies, by label (the former held-out sets split crises
    into explicit and indirect phrasings; both are trained on)."""
    merged: dict[str, dict[str, list[str]]] = {"messages": {}, "replies": {}}
    for name in _TRAINING_FILES:
        raw = yaml.safe_load(_safety_file(directory, name).read_text(encoding="utf-8"))
        for section, labelled in merged.items():
            for label, texts in raw[section].items():
                flat = texts["explicit"] + texts["indirect"] if isinstance(texts, dict) else texts
                labelled.setdefault(label, []).extend(flat)
    return TrainingSet.model_validate({"version": 1, **merged})


def ordinary_messages(directory: Path | None = None) -> list[str]:
    """Every domain's everyday situations from the generator's material (``topics[].situations``).

    Read as plain YAML: the material's schema belongs to Data Generation, another agent.
    """
    out: list[str] = []
    for path in _material_files(directory):
        material = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out += [s for topic in material.get("topics", []) for s in topic.get("situations", [])]
    return out


def _material_files(directory: Path | None) -> list[Path]:
    root = directory / "material" if directory is not None and (directory / "material").is_dir() else None
    root = root or Path(str(importlib.resources.files("configs").joinpath("material")))
    return sorted(root.glob("*/*.yaml"))


def load_detector_settings(directory: Path | None = None) -> DetectorSettings:
    path = _safety_file(directory, "detector.yaml")
    return DetectorSettings.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


_lock = threading.Lock()
_detectors: dict[str, CrisisDetector] = {}


def sources_digest(directory: Path | None = None) -> str:
    """A digest of the bytes of every file the detector is built from.

    What identifies a detector: hashing takes milliseconds where parsing the YAML takes most of a
    second, and every data filter and model check asks for the detector.
    """
    trained = model_dir(directory)
    sources = [
        *training_files(directory),
        signals_path(directory),
        *sorted(p for p in trained.rglob("*") if p.is_file()),
    ]
    digest = hashlib.sha256()
    for path in sources:
        digest.update(f"{path}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def default_detector(directory: Path | None = None, cache_dir: Path | None = None) -> CrisisDetector:
    """The detector from the configured set and classifier; one per process and set."""
    key = sources_digest(directory)
    with _lock:
        if key not in _detectors:
            settings = load_detector_settings(directory)
            trained = model_dir(directory)
            if read_meta(trained).training_digest != training_digest(training_files(directory), settings.training):
                log.warning(
                    "crisis_classifier.stale",
                    model=str(trained),
                    fix="the labelled sets changed since it was trained: python -m agents.text.crisis_training",
                )
            _detectors[key] = CrisisDetector(
                CrisisModel(trained, default_model_path()),
                default_embedder(),
                load_signals(directory),
                load_training_set(directory),
                settings,
                cache_dir,
            )
        return _detectors[key]
