"""The crisis detector on the held-out set it never trained on, and keywords alone beside it.

    python -m bench.crisis_detector [--json]

Prints per kind: recall (all, and of the messages phrased without keywords), precision, kind
accuracy; the false-alarm rate on non-crisis messages; the reply judge's recall and precision;
then the same for the keyword patterns alone (the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import json

from agents.text.crisis import CRISIS_KINDS, default_detector
from agents.text.crisis_measure import DetectorScores, load_heldout, measure
from agents.text.signals import load_signals


def _keywords_only(heldout_texts: list[str]) -> list[bool]:
    signals = load_signals()
    return [signals.crisis_kind(t) is not None for t in heldout_texts]


def _print(scores: DetectorScores) -> None:
    print(f"{'kind':<20}{'n':>4}{'recall':>8}{'indirect':>10}{'precision':>11}{'kind ok':>9}")
    for kind, s in scores.kinds.items():
        print(
            f"{kind:<20}{s.messages:>4}{s.recall:>8.3f}{s.recall_indirect:>10.3f}{s.precision:>11.3f}{s.kind_accuracy:>9.3f}"
        )
    print(f"false alarms on non-crisis messages: {scores.false_positive_rate:.3f}")
    print(f"reply judge: recall {scores.reply_recall:.3f}, precision {scores.reply_precision:.3f}")
    for line in scores.missed + scores.false_alarms + scores.reply_errors:
        print(f"  - {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    args = parser.parse_args()
    heldout = load_heldout()
    scores = measure(default_detector(), heldout)
    crises = heldout.crises()
    flagged = _keywords_only([t for t, _, _ in crises])
    baseline = {
        kind: round(
            sum(f for f, (_, k, _) in zip(flagged, crises, strict=True) if k == kind)
            / sum(k == kind for _, k, _ in crises),
            4,
        )
        for kind in CRISIS_KINDS
    }
    if args.json:
        print(json.dumps({"detector": scores.model_dump(), "keywords_only_recall": baseline}, indent=2))
        return
    _print(scores)
    print("keywords alone, recall per kind:", ", ".join(f"{k} {v:.3f}" for k, v in baseline.items()))


if __name__ == "__main__":
    main()
