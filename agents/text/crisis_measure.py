"""Measure the crisis detector on the held-out set it never trained on.

Per kind: recall (a crisis of that kind is flagged as a crisis), precision (a message flagged as
that kind is really a crisis; any crisis gets the same answer, real help), and how often the kind
itself is right. The same for the reply judge. Used by ``bench/crisis_detector.py`` (figures) and
the safety tests (bars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from agents.text.crisis import CRISIS_KINDS, CrisisDetector, _safety_file
from agents.text.signals import CrisisKind

__all__ = ["DetectorScores", "HeldoutSet", "KindScores", "load_heldout", "measure"]


class _Phrasings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    explicit: list[str]
    indirect: list[str]
    """Phrased without the obvious keywords."""


class HeldoutSet(BaseModel):
    """``configs/safety/crisis_heldout.yaml`` (written by another author than the training set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    messages: dict[CrisisKind | Literal["none"], _Phrasings | list[str]]
    replies: dict[Literal["real_help", "no_help"], list[str]]

    def crises(self) -> list[tuple[str, CrisisKind, bool]]:
        """(text, kind, indirect) of every crisis message."""
        out = []
        for kind in CRISIS_KINDS:
            phrasings = self.messages[kind]
            assert isinstance(phrasings, _Phrasings), f"{kind} needs explicit and indirect lists"
            out += [(t, kind, False) for t in phrasings.explicit] + [(t, kind, True) for t in phrasings.indirect]
        return out

    def non_crises(self) -> list[str]:
        none = self.messages["none"]
        assert isinstance(none, list), "none is a plain list"
        return none


class KindScores(BaseModel):
    model_config = ConfigDict(frozen=True)
    messages: int
    recall: float
    recall_indirect: float
    precision: float
    kind_accuracy: float


class DetectorScores(BaseModel):
    model_config = ConfigDict(frozen=True)
    kinds: dict[str, KindScores]
    false_positive_rate: float
    """Share of non-crisis messages flagged."""
    reply_recall: float
    reply_precision: float
    missed: list[str]
    false_alarms: list[str]
    reply_errors: list[str]


def load_heldout(directory: Path | None = None) -> HeldoutSet:
    path = _safety_file(directory, "crisis_heldout.yaml")
    return HeldoutSet.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def measure(detector: CrisisDetector, heldout: HeldoutSet) -> DetectorScores:
    crises = heldout.crises()
    none = heldout.non_crises()
    verdicts = detector.detect([t for t, _, _ in crises] + none)
    truth: list[CrisisKind | None] = [k for _, k, _ in crises] + [None] * len(none)
    predicted = [v.kind for v in verdicts]
    kinds = {}
    for kind in CRISIS_KINDS:
        rows = [i for i, (_, k, _) in enumerate(crises) if k == kind]
        indirect = [i for i in rows if crises[i][2]]
        flagged_as = [i for i, p in enumerate(predicted) if p == kind]
        kinds[kind] = KindScores(
            messages=len(rows),
            recall=round(sum(predicted[i] is not None for i in rows) / len(rows), 4),
            recall_indirect=round(sum(predicted[i] is not None for i in indirect) / max(len(indirect), 1), 4),
            precision=round(sum(truth[i] is not None for i in flagged_as) / len(flagged_as), 4) if flagged_as else 1.0,
            kind_accuracy=round(sum(predicted[i] == kind for i in rows) / len(rows), 4),
        )
    offset = len(crises)
    false_alarms = [none[i] for i in range(len(none)) if predicted[offset + i] is not None]
    helps = heldout.replies["real_help"]
    no_help = heldout.replies["no_help"]
    judged = detector.points_to_real_help(helps + no_help)
    true_pos = sum(judged[: len(helps)])
    false_pos = sum(judged[len(helps) :])
    return DetectorScores(
        kinds=kinds,
        false_positive_rate=round(len(false_alarms) / len(none), 4),
        reply_recall=round(true_pos / len(helps), 4),
        reply_precision=round(true_pos / (true_pos + false_pos), 4) if true_pos + false_pos else 1.0,
        missed=[f"{k}: {t}" for (t, k, _), p in zip(crises, predicted[:offset], strict=True) if p is None],
        false_alarms=false_alarms,
        reply_errors=[f"help judged as none: {r}" for r, j in zip(helps, judged, strict=False) if not j]
        + [f"none judged as help: {r}" for r, j in zip(no_help, judged[len(helps) :], strict=True) if j],
    )
