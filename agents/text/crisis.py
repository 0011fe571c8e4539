"""Crisis detection by meaning: a user message that needs real help, and a reply that gives it.

Keyword patterns (``configs/signals.yaml``) catch the plain phrasings; an RBF SVM plus a
nearest-neighbour margin over all-MiniLM-L6-v2 embeddings, trained on the hand-labelled
``configs/safety/crisis_train.yaml`` and the former held-out sets, catches the paraphrases ("I've
sorted out who gets my guitar"). A message is a crisis when either says so: a missed crisis costs
far more than an extra pointer to a helpline. Long texts are also judged sentence by sentence,
because one crisis sentence inside a paragraph about something else is diluted in a whole-text
embedding.

The held-out set ``configs/safety/crisis_heldout.yaml`` (version 5, a fresh author, never trained
or tuned on) measures recall and precision per kind: ``bench/crisis_detector.py`` and the safety tests.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from agents.llm.embeddings import Embedder, default_embedder
from agents.text.signals import SENTENCE_BREAK, CrisisKind, Signals, load_signals, signals_path

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
]

CRISIS_KINDS: tuple[CrisisKind, ...] = get_args(CrisisKind)
_NONE = "none"


class TrainingSet(BaseModel):
    """``configs/safety/crisis_train.yaml`` + the former held-out sets: labelled user messages and assistant replies."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    messages: dict[CrisisKind | Literal["none"], list[str]]
    replies: dict[Literal["real_help", "no_help"], list[str]]


class DetectorSettings(BaseModel):
    """``configs/safety/detector.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target_recall: float = Field(gt=0.5, lt=1)
    """The crisis threshold is set where cross-validation on the training set catches this share."""
    neighbours: int = Field(ge=1)
    """How many nearest training messages of each side the neighbour margin averages."""
    neighbour_weight: float = Field(ge=0)
    """Weight of the neighbour margin beside the SVM's decision value."""
    regularisation: float = Field(gt=0)
    """Inverse regularisation strength (scikit-learn's C) of the classifiers."""
    help_threshold: float = Field(gt=0, lt=1)
    """Below this probability the judge vetoes a reply that names a pointer to help (it only vetoes:
    a reply must also give something concrete to do, see ``Signals.points_to_real_help``)."""


@dataclass(frozen=True, slots=True)
class CrisisVerdict:
    kind: CrisisKind | None
    """The crisis the text signals, or None."""
    score: float
    """How far the text (or its most alarming sentence) is on the crisis side; >= ``threshold`` is a crisis."""
    by_pattern: bool
    """A keyword pattern matched."""


def sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in SENTENCE_BREAK.split(text)) if len(s.split()) >= 2]


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
    """Embeddings of a training set (messages or replies), kept on disk under its hash: a few
    thousand texts take a minute to embed on a busy 2-core machine, and every QA process needs them."""
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


def _cached_threshold(
    cache_dir: Path | None, vectors: np.ndarray, settings: DetectorSettings, calibrate: Callable[[], float]
) -> float:
    """The calibrated threshold, kept beside the embeddings: five cross-validation fits per process
    start cost tens of seconds on a busy machine, and the result depends only on the vectors."""
    if cache_dir is None:
        return calibrate()
    from runtime import atomic_write

    digest = hashlib.sha256(vectors.tobytes() + settings.model_dump_json().encode()).hexdigest()[:32]
    path = cache_dir / f"crisis-threshold-{digest}.json"
    try:
        return float(json.loads(path.read_text())["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        threshold = calibrate()
        with atomic_write(path) as f:
            f.write(json.dumps({"threshold": threshold}))
        return threshold


class CrisisDetector:
    """Patterns plus an embedding classifier, for user messages and for the replies to them."""

    def __init__(
        self,
        embedder: Embedder,
        signals: Signals,
        training: TrainingSet,
        settings: DetectorSettings,
        ordinary: Sequence[str] = (),
        cache_dir: Path | None = None,
    ) -> None:
        """``ordinary``: more non-crisis messages (the domains' everyday situations: grief, panic, a
        first-aid course), so worried-but-safe messages of the catalogue's own domains are not flagged.
        ``cache_dir``: where the training set's embeddings are kept between processes."""
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        self._embedder = embedder
        self._signals = signals
        self._settings = settings
        texts = [t for texts in training.messages.values() for t in texts] + list(ordinary)
        labels = [label for label, texts in training.messages.items() for _ in texts] + [_NONE] * len(ordinary)
        vectors = _cached_encode(embedder, texts, cache_dir)
        crisis = np.array([label != _NONE for label in labels])
        self._vectors, self._crisis = vectors, crisis
        self._svm = self._fit_svm(vectors, crisis)
        self.threshold = _cached_threshold(cache_dir, vectors, settings, lambda: self._calibrate(vectors, crisis))
        # "Which crisis" is a second, linear question, asked only of crisis messages.
        self._kind = LogisticRegression(C=settings.regularisation, max_iter=5000).fit(
            vectors[crisis], [label for label, c in zip(labels, crisis, strict=True) if c]
        )
        replies = [t for texts in training.replies.values() for t in texts]
        helps = [label == "real_help" for label, texts in training.replies.items() for _ in texts]
        self._replies = LogisticRegression(C=settings.regularisation, max_iter=5000, class_weight="balanced").fit(
            _cached_encode(embedder, replies, cache_dir), helps
        )

    def _fit_svm(self, vectors: np.ndarray, crisis: np.ndarray) -> Any:
        from sklearn.svm import SVC  # type: ignore[import-untyped]

        # Crises and their figurative look-alikes ("this commute is killing me") are not linearly
        # separable in MiniLM's space: an RBF SVM, classes balanced (seven kinds against 'none').
        return SVC(C=self._settings.regularisation, kernel="rbf", class_weight="balanced").fit(vectors, crisis)

    @staticmethod
    def _neighbour_margin(train: np.ndarray, crisis: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
        """Mean similarity to the k nearest crisis messages minus that to the k nearest others."""
        similarity = queries @ train.T
        near_crisis = np.sort(np.where(crisis[None, :], similarity, -1.0), axis=1)[:, -k:].mean(axis=1)
        near_other = np.sort(np.where(~crisis[None, :], similarity, -1.0), axis=1)[:, -k:].mean(axis=1)
        return np.asarray(near_crisis - near_other)

    def _score(self, svm: Any, train: np.ndarray, crisis: np.ndarray, queries: np.ndarray) -> np.ndarray:
        s = self._settings
        margin = self._neighbour_margin(train, crisis, queries, s.neighbours)
        return np.asarray(svm.decision_function(queries) + s.neighbour_weight * margin)

    def _calibrate(self, vectors: np.ndarray, crisis: np.ndarray) -> float:
        """The score that catches ``target_recall`` of the training crises, out of fold (5-fold CV)."""
        from sklearn.model_selection import StratifiedKFold  # type: ignore[import-untyped]

        scores = np.zeros(len(crisis))
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(vectors, crisis):
            svm = self._fit_svm(vectors[train], crisis[train])
            scores[test] = self._score(svm, vectors[train], crisis[train], vectors[test])
        return float(np.quantile(scores[crisis], 1 - self._settings.target_recall))

    def detect(self, texts: Sequence[str]) -> list[CrisisVerdict]:
        """One verdict per text (batched: one embedding pass for all)."""
        if not texts:
            return []
        units, owner = _units(texts)
        vectors = self._embedder.encode(units)
        scores = self._score(self._svm, self._vectors, self._crisis, vectors)
        kinds = self._kind.predict(vectors)
        best: list[tuple[float, CrisisKind | None]] = [(-np.inf, None)] * len(texts)
        for score, predicted, i in zip(scores, kinds, owner, strict=True):
            if float(score) > best[i][0]:
                best[i] = (float(score), predicted)
        verdicts = []
        for text, (score, meant) in zip(texts, best, strict=True):
            # The patterns stay: a plain "he's choking and turning blue" must never hinge on a model.
            pattern = self._signals.crisis_kind(text)
            kind: CrisisKind | None = meant if score >= self.threshold else pattern
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
    "crisis_train_smalltalk.yaml",
    "crisis_dev.yaml",
    "crisis_dev_v2.yaml",
    "crisis_dev_v3.yaml",
    "crisis_dev_v4.yaml",
)
"""The training set, everyday non-crises (trivia, homework, slang; another author), short chat turns
(greetings, thanks, farewells), and the first four held-out sets: each was looked at while tuning,
so trained on since."""


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
    sources = [
        *(_safety_file(directory, name) for name in (*_TRAINING_FILES, "detector.yaml")),
        signals_path(directory),
        *_material_files(directory),
    ]
    digest = hashlib.sha256()
    for path in sources:
        digest.update(f"{path}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def default_detector(directory: Path | None = None, cache_dir: Path | None = None) -> CrisisDetector:
    """The detector trained on the configured set with the shared embedder; one per process and set."""
    key = sources_digest(directory)
    with _lock:
        if key not in _detectors:
            _detectors[key] = CrisisDetector(
                default_embedder(),
                load_signals(directory),
                load_training_set(directory),
                load_detector_settings(directory),
                ordinary_messages(directory),
                cache_dir,
            )
        return _detectors[key]
