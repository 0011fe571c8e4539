"""Data benchmark: generation and filtering throughput, near-duplicate pass cost, catalogue pass rates.

    python -m bench.data [--domain mental_health] [--samples 5000] [--catalogue]

Reports samples/s generated and filtered for one domain, the MinHash LSH near-duplicate pass
per 10k samples against an all-pairs Jaccard baseline run in the same process, the dataset's
distinct 3-gram ratio and near-duplicate rate, and with ``--catalogue`` the first-round pass
rate of every domain at 200 samples (min / median).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.data_generation.affinity import TopicAffinity
from agents.data_generation.dataset_files import write_batch
from agents.data_generation.stats import dataset_stats
from agents.quality_assurance import DataFilter
from agents.quality_assurance.dedup import Deduplicator
from agents.quality_assurance.relevance import DomainReferences, Embedder, default_embedder
from agents.quality_assurance.thresholds import load_thresholds
from agents.text.ngrams import word_ngrams
from agents.text.signals import load_signals
from runtime import Domain, load_catalog


def _generator(domain: Domain) -> CompositionalGenerator:
    """As the Data Generation agent builds it: with the topic-affinity table."""
    material = load_material(domain.category, domain.name)
    affinity = TopicAffinity(material, default_embedder().encode)
    return CompositionalGenerator(domain, material, load_common(), load_signals(), affinity=affinity)


_references: DomainReferences | None = None


def _filter(domain: Domain, embedder: Embedder) -> DataFilter:
    global _references
    if _references is None:
        _references = DomainReferences.from_catalog(embedder, load_catalog())
    return DataFilter(
        domain=domain.name,
        thresholds=load_thresholds(domain.category),
        signals=load_signals(),
        embedder=embedder,
        references=_references,
    )


def one_domain(domain: Domain, n: int, work: Path) -> None:
    began = time.perf_counter()
    embedder = default_embedder()
    load_s = time.perf_counter() - began
    generator = _generator(domain)
    began = time.perf_counter()
    write_batch(work / "gen.jsonl", (generator.sample(0, i) for i in range(n)))
    gen_s = time.perf_counter() - began

    began = time.perf_counter()
    report = _filter(domain, embedder).run(work / "gen.jsonl", work / "kept.jsonl", work / "rej.jsonl")
    filter_s = time.perf_counter() - began
    stats = dataset_stats(work / "kept.jsonl")
    print(f"{domain.name}, {n} samples")
    print(f"  generate          : {n / gen_s:8.0f} samples/s")
    print(f"  filter (all rules): {n / filter_s:8.1f} samples/s   (embedding model load {load_s:.1f} s, once)")
    print(f"  pass rate         : {report.pass_rate:.3f}   near-duplicate rate {report.near_duplicate_rate:.3f}")
    print(f"  distinct 3-grams  : {stats.distinct_3grams} ({stats.distinct_3gram_ratio:.3f} of all 3-grams, kept data)")
    for rule in report.rules:
        if rule.rejected:
            print(f"    rejected by {rule.rule:16s}: {rule.rejected}")


def near_duplicate_pass(domain: Domain, work: Path) -> None:
    generator = _generator(domain)
    texts = [generator.sample(1, i).dialogue_text() for i in range(10_000)]
    thresholds = load_thresholds(domain.category)

    began = time.perf_counter()
    dedup = Deduplicator(threshold=thresholds.near_duplicate_jaccard, permutations=thresholds.minhash_permutations)
    for i, text in enumerate(texts):
        if not dedup.exact_duplicate(text) and dedup.near_duplicate_of(text) is None:
            dedup.add(str(i), text)
    lsh_s = time.perf_counter() - began

    # Baseline: exact Jaccard of every pair, on the first 1,000 texts only (it is quadratic).
    subset = texts[:1000]
    began = time.perf_counter()
    sets = [set(word_ngrams(t, 3)) for t in subset]
    for a, b in itertools.combinations(sets, 2):
        _ = len(a & b) / len(a | b)
    pairs_s = time.perf_counter() - began
    began = time.perf_counter()
    small = Deduplicator(threshold=thresholds.near_duplicate_jaccard, permutations=thresholds.minhash_permutations)
    for i, text in enumerate(subset):
        if small.near_duplicate_of(text) is None:
            small.add(str(i), text)
    lsh_small_s = time.perf_counter() - began
    print("near-duplicate pass (MinHash LSH, word 3-grams)")
    print(f"  10,000 samples    : {lsh_s:.2f} s")
    print(
        f"  1,000 samples     : LSH {lsh_small_s:.2f} s vs all-pairs Jaccard {pairs_s:.2f} s"
        f"   speed-up {pairs_s / lsh_small_s:.1f}x"
    )


def catalogue(work: Path) -> None:
    catalog = load_catalog()
    embedder = default_embedder()
    rates = {}
    for name, domain in catalog.domains.items():
        generator = _generator(domain)
        source = work / f"{name}.jsonl"
        write_batch(source, (generator.sample(0, i) for i in range(200)))
        report = _filter(domain, embedder).run(source, work / f"{name}.k.jsonl", work / f"{name}.r.jsonl")
        rates[name] = report.pass_rate
    worst = sorted(rates.items(), key=lambda kv: kv[1])[:5]
    print(f"catalogue, 200 samples per domain, {len(rates)} domains")
    print(f"  pass rate min {min(rates.values()):.3f}  median {statistics.median(rates.values()):.3f}")
    print("  lowest: " + ", ".join(f"{n} {r:.3f}" for n, r in worst))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="mental_health")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--catalogue", action="store_true")
    args = parser.parse_args()
    domain = load_catalog().domain(args.domain)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one_domain(domain, args.samples, work)
        near_duplicate_pass(domain, work)
        if args.catalogue:
            catalogue(work)


if __name__ == "__main__":
    main()
