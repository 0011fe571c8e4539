"""The Quality Assurance agent's typed tool surface (data side)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread

from agents.quality_assurance.data_filter import ALL_RULES, DataFilter
from agents.quality_assurance.relevance import DomainReferences, Embedder, default_embedder
from agents.quality_assurance.thresholds import load_thresholds
from protocol import InvalidParams
from protocol.agents.quality_assurance import FilterDatasetInput, FilterDatasetOutput, FilterReport
from runtime import Agent, CallContext, tool
from runtime._signals import load_signals

__all__ = ["QualityAssuranceAgent"]


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


class QualityAssuranceAgent(Agent):
    """The gate: filters training data now; validates models before deploy (model issue)."""

    name = "quality_assurance"
    description = "Data filtering (duplicates, length, PII, crisis safety, empathy, relevance) and QA reports."
    concurrency = 2

    _relevance: tuple[Embedder, DomainReferences] | None = None

    async def _relevance_model(self) -> tuple[Embedder, DomainReferences]:
        """The embedder and all domains' reference vectors, built on first use."""
        if self._relevance is None:
            catalog = self.ctx.catalog

            def build() -> tuple[Embedder, DomainReferences]:
                embedder = default_embedder()
                return embedder, DomainReferences.from_catalog(embedder, catalog)

            self._relevance = await anyio.to_thread.run_sync(build)
        return self._relevance

    @tool(idempotent=True)
    async def filter_dataset(self, params: FilterDatasetInput, ctx: CallContext) -> FilterDatasetOutput:
        """Filter a conversation dataset with every data rule; returns the kept samples and a report.

        Rules: schema, turn length, PII (reject or scrub), crisis safety (crisis messages must be
        answered with real help, never a diagnosis), empathy (feelings are acknowledged), domain
        relevance (embedding similarity), exact and near duplicates (MinHash LSH), also against
        the ``against`` datasets.
        """
        domain = self.ctx.catalog.domain(params.domain)
        settings = self.ctx.settings
        thresholds = load_thresholds(domain.category, settings.catalog_dir)
        if params.pii is not None:
            thresholds = thresholds.model_copy(update={"pii": params.pii})
        rules = tuple(params.rules) if params.rules is not None else ALL_RULES
        if "schema" not in rules:
            rules = ("schema", *rules)
        embedder, references = await self._relevance_model() if "relevance" in rules else (None, None)
        with tempfile.TemporaryDirectory(prefix="meetara-qa-") as tmp:
            work = Path(tmp)
            source = await self.ctx.artifacts.fetch(params.dataset, work / "input.jsonl")
            accepted = [
                await self.ctx.artifacts.fetch(ref, work / f"against{i}.jsonl") for i, ref in enumerate(params.against)
            ]
            total = await anyio.to_thread.run_sync(_count_lines, source)
            data_filter = DataFilter(
                domain=domain.name,
                thresholds=thresholds,
                signals=load_signals(settings.catalog_dir),
                embedder=embedder,
                references=references,
                rules=rules,
            )
            last = [0.0]

            def progress(done: int) -> None:
                if time.monotonic() - last[0] >= 2.0:
                    last[0] = time.monotonic()
                    anyio.from_thread.run(ctx.progress, done, total, f"filtering {domain.name}")

            kept_path, rejections_path = work / "kept.jsonl", work / "rejections.jsonl"

            def run() -> FilterReport:
                for path in accepted:
                    data_filter.remember(path)
                return data_filter.run(source, kept_path, rejections_path, progress=progress)

            try:
                report = await anyio.to_thread.run_sync(run)
            except UnicodeDecodeError:
                raise InvalidParams("the dataset is not UTF-8 text (JSONL expected)") from None
            kept = await self.ctx.artifacts.put_file(kept_path, media_type="application/jsonl")
            rejections = await self.ctx.artifacts.put_file(rejections_path, media_type="application/jsonl")
        self.log.info(
            "dataset filtered",
            domain=domain.name,
            input=report.input,
            kept=report.kept,
            pass_rate=round(report.pass_rate, 3),
        )
        return FilterDatasetOutput(kept=kept, rejections=rejections, report=report)
