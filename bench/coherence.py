"""Coherence benchmark: do a compositional reply's advice and the user's message belong together?

    python -m bench.coherence [--samples 400] [--domains general_health relationships programming financial]

For each domain, the same samples are generated with the topic-affinity table and without it
(the baseline: any line of the topic), in this process. Reported per generator: the median and
10th percentile of cos(user message, the reply's advice paragraph), and the share of replies
that fit their own message less well than the median reply written for another topic of the
same domain fits it ("reads like an answer to something else"). The similarity is MiniLM's,
the model the affinity table ranks lines with, so it measures what the table optimises; read
the printed examples too. Also the distinct 3-gram ratio, since fewer combinations cost variety.
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.data_generation.affinity import TopicAffinity
from agents.data_generation.stats import StatsAccumulator
from agents.llm.embeddings import default_embedder
from agents.text.signals import load_signals
from protocol.datasets import ConversationSample
from runtime import load_catalog


def _advice_paragraph(sample: ConversationSample) -> str:
    return max(sample.turns("assistant")[0].split("\n\n"), key=len)


def _measure(samples: list[ConversationSample]) -> tuple[float, float, float, float]:
    encode = default_embedder().encode
    users = encode([s.turns("user")[0] for s in samples])
    replies = encode([_advice_paragraph(s) for s in samples])
    own = (users * replies).sum(axis=1)
    rng = random.Random(0)
    elsewhere = []
    for i, sample in enumerate(samples):
        others = [j for j, t in enumerate(samples) if t.topic != sample.topic]
        picks = rng.sample(others, min(20, len(others)))
        elsewhere.append(float(np.median(replies[picks] @ users[i])))
    stats = StatsAccumulator()
    for sample in samples:
        stats.add(sample)
    answers_else = float((own <= np.asarray(elsewhere)).mean())
    return float(np.median(own)), float(np.percentile(own, 10)), answers_else, stats.result().distinct_3gram_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--domains", nargs="+", default=["general_health", "relationships", "programming", "financial"])
    parser.add_argument("--examples", type=int, default=2, help="print this many samples of each generator")
    args = parser.parse_args()
    catalog, signals, common = load_catalog(), load_signals(), load_common()
    encode = default_embedder().encode
    print(f"{'domain':16s} {'generator':9s} {'median cos':>10s} {'p10 cos':>8s} {'answers else':>12s} {'3-gram':>7s}")
    for name in args.domains:
        domain = catalog.domain(name)
        material = load_material(domain.category, name)
        variants = {"any line": None, "affinity": TopicAffinity(material, encode)}
        for label, affinity in variants.items():
            generator = CompositionalGenerator(
                domain, material, common, signals, crisis_fraction=0.0, affinity=affinity
            )
            samples = [generator.sample(0, i) for i in range(args.samples)]
            median, p10, answers_else, ratio = _measure(samples)
            print(f"{name:16s} {label:9s} {median:10.3f} {p10:8.3f} {answers_else:12.3f} {ratio:7.3f}")
            for sample in samples[: args.examples]:
                print(f"    user : {sample.turns('user')[0]}")
                print(f"    reply: {_advice_paragraph(sample)}")


if __name__ == "__main__":
    main()
