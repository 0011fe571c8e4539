"""The whole-catalogue check: every domain's first 60 samples pass QA at 80% or better."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.data_generation.affinity import TopicAffinity
from agents.data_generation.dataset_files import write_batch
from agents.quality_assurance import DataFilter
from agents.quality_assurance.relevance import DomainReferences, default_embedder
from agents.quality_assurance.thresholds import load_thresholds
from agents.text.signals import load_signals
from runtime import load_catalog

SAMPLES = 60
MIN_PASS_RATE = 0.80


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_every_domain_generates_samples_that_pass_qa(tmp_path: Path) -> None:
    catalog = load_catalog()
    signals = load_signals()
    common = load_common()
    embedder = default_embedder()
    references = DomainReferences.from_catalog(embedder, catalog)
    rates: dict[str, float] = {}
    for name, domain in catalog.domains.items():
        material = load_material(domain.category, name)
        affinity = TopicAffinity(material, embedder.encode)  # as the Data Generation agent generates
        generator = CompositionalGenerator(domain, material, common, signals, affinity=affinity)
        source = tmp_path / f"{name}.jsonl"
        write_batch(source, (generator.sample(0, i) for i in range(SAMPLES)))
        data_filter = DataFilter(
            domain=name,
            thresholds=load_thresholds(domain.category),
            signals=signals,
            embedder=embedder,
            references=references,
        )
        report = data_filter.run(source, tmp_path / f"{name}.kept.jsonl", tmp_path / f"{name}.rej.jsonl")
        rates[name] = report.pass_rate
    failing = {n: round(r, 3) for n, r in rates.items() if r < MIN_PASS_RATE}
    print(
        f"pass rate over {len(rates)} domains: min {min(rates.values()):.3f}, "
        f"median {statistics.median(rates.values()):.3f}"
    )
    assert len(rates) == 62
    assert failing == {}
