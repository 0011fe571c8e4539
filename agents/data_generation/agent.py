"""The Data Generation agent's typed tool surface and its generate → filter feedback loop."""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio
import anyio.to_thread

from agents.data_generation.affinity import TopicAffinity
from agents.data_generation.compositional import CompositionalGenerator, load_common
from agents.data_generation.dataset_files import assemble, interleave, scope_training_paths, training_paths, write_batch
from agents.data_generation.material import load_material
from agents.data_generation.mixed import MixedGenerator
from agents.data_generation.stats import dataset_stats
from agents.data_generation.teacher import TeacherGenerator, journal_path, teacher_requirement
from agents.data_generation.teacher_client import TeacherUnavailable, list_models
from agents.data_generation.teacher_journal import TeacherJournal
from agents.llm.embeddings import default_embedder
from agents.llm.layout import domains_of
from agents.text.signals import load_signals
from protocol import ArtifactRef, InvalidParams
from protocol.agents.data_generation import (
    CheckTeacherInput,
    CheckTeacherOutput,
    CombineInput,
    CombineOutput,
    DatasetStats,
    DatasetStatsInput,
    GenerateInput,
    GenerateOutput,
    GeneratorInfo,
    ListGeneratorsInput,
    ListGeneratorsOutput,
    TeacherSettings,
    TeacherUsage,
)
from protocol.agents.quality_assurance import FilterDatasetInput, FilterDatasetOutput
from runtime import Agent, AgentContext, CallContext, Domain, ToolError, tool

__all__ = ["DataGenerationAgent"]

# Time allowed to filter one sample (embedding on a small CPU dominates), and a floor: QA's first
# filter of a process loads the embedder and fits the crisis detector (thousands of labelled texts
# embedded once, then cached): minutes on a busy 2-core machine. A live agent that is working is
# waited for; a call that times out is only done again.
_FILTER_SECONDS_PER_SAMPLE = 0.05
_FILTER_FLOOR_S = 900.0
# A teacher answers a few conversations a second at most: report progress at most this often.
_TEACHER_PROGRESS_S = 1.0


class DataGenerationAgent(Agent):
    """Writes domain conversations and keeps regenerating until QA accepts enough of them."""

    name = "data_generation"
    description = "Training conversations per domain, filtered by Quality Assurance in a feedback loop."
    concurrency = 2

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self._affinities: dict[str, TopicAffinity] = {}
        """Per domain, built on first use and again when its material file changes."""

    async def _generator(self, params: GenerateInput, domain: Domain) -> CompositionalGenerator | TeacherGenerator:
        settings = self.ctx.settings
        material = load_material(domain.category, domain.name, _material_root(settings.catalog_dir))
        signals = load_signals(settings.catalog_dir)
        affinity = self._affinities.get(domain.name)
        if params.generator != "teacher" and (affinity is None or affinity.material != material):
            # Loading the embedder and embedding a domain's lines: seconds, off the event loop.
            affinity = await anyio.to_thread.run_sync(lambda: TopicAffinity(material, default_embedder().encode))
            self._affinities[domain.name] = affinity
        compositional = CompositionalGenerator(
            domain,
            material,
            load_common(_material_root(settings.catalog_dir), catalog_dir=settings.catalog_dir),
            signals,
            multi_turn_fraction=params.multi_turn_fraction,
            crisis_fraction=params.crisis_fraction,
            affinity=affinity,
        )
        if params.generator == "compositional":
            return compositional
        if params.teacher is None:
            raise InvalidParams(f"the {params.generator} generator needs `teacher` settings (gguf_path or base_url)")
        problem = teacher_requirement(params.teacher)
        if problem:
            raise InvalidParams(problem)
        journal = TeacherJournal(journal_path(settings.data_dir, domain.name, params.teacher))
        opening = compositional.common.crisis_replies.opening
        if params.generator == "mixed":
            return MixedGenerator(
                compositional, domain, material, signals, params.teacher, crisis_opening=opening, journal=journal
            )
        return TeacherGenerator(
            domain,
            material,
            signals,
            params.teacher,
            crisis_fraction=params.crisis_fraction,
            crisis_opening=opening,
            journal=journal,
        )

    @tool(idempotent=True)
    async def generate(self, params: GenerateInput, ctx: CallContext) -> GenerateOutput:
        """Generate a domain's training conversations, filter them through QA, and write train/eval JSONL.

        Rounds continue, with new samples steered away from the topics QA rejected most, until
        ``count`` samples pass or ``max_rounds`` is reached. The same seed gives the same data.
        """
        domain = self.ctx.catalog.domain(params.domain)
        generator = await self._generator(params, domain)
        with tempfile.TemporaryDirectory(prefix=f"meetara-{domain.name}-") as tmp:
            work = Path(tmp)
            loop = _Loop(self, ctx, params, domain, generator, work)
            try:
                await loop.run()
            except TeacherUnavailable as exc:
                # Answers so far are journaled: a re-run (the Conductor's retry) pays only for the rest.
                raise ToolError(
                    f"{exc}; a re-run reuses the answers already received",
                    data={"step": "generate", "teacher_usage": _usage(generator).model_dump()},
                ) from exc
            finally:
                if isinstance(generator, TeacherGenerator):
                    await generator.aclose()
            train_path, eval_path = training_paths(self.ctx.settings.data_dir, domain.category, domain.name)
            n_train, n_eval = await anyio.to_thread.run_sync(
                lambda: assemble(
                    loop.kept_files,
                    count=params.count,
                    eval_fraction=params.eval_fraction,
                    train_path=train_path,
                    eval_path=eval_path,
                )
            )
        if n_train == 0:
            raise ToolError(
                f"no {domain.name} samples passed QA in {loop.rounds} round(s)",
                data={"rejections": dict(loop.rejections)},
            )
        dataset = await self.ctx.artifacts.put_file(train_path, media_type="application/jsonl")
        eval_dataset = await self.ctx.artifacts.put_file(eval_path, media_type="application/jsonl")
        stats = await anyio.to_thread.run_sync(dataset_stats, train_path)
        return GenerateOutput(
            dataset=dataset,
            eval_dataset=eval_dataset,
            path=str(train_path),
            eval_path=str(eval_path),
            stats=stats,
            eval_samples=n_eval,
            generated=loop.generated,
            kept=loop.kept,
            pass_rate=loop.kept / loop.generated if loop.generated else 0.0,
            near_duplicate_rate=loop.rejections["near_duplicate"] / loop.generated if loop.generated else 0.0,
            rejections=dict(loop.rejections),
            rounds=loop.rounds,
            reached_target=loop.kept >= params.count,
            teacher_usage=generator.usage if isinstance(generator, TeacherGenerator) else None,
        )

    @tool(idempotent=True)
    async def combine(self, params: CombineInput) -> CombineOutput:
        """Merge every domain's data into one category or universal training set (and eval set).

        Each part must be one of the scope's domains, each domain exactly once; domains are
        interleaved in proportion so every stretch of the training set covers all of them.
        """
        catalog = self.ctx.catalog
        expected = set(domains_of(params.scope, params.target, catalog))
        given = [part.domain for part in params.parts]
        if set(given) != expected or len(given) != len(expected):
            missing, extra = sorted(expected - set(given)), sorted(set(given) - expected)
            raise InvalidParams(
                f"the {params.scope} {params.target!r} needs each of its {len(expected)} domains exactly once",
                data={"missing": missing, "not_in_scope": extra, "given": given},
            )
        train_path, eval_path = scope_training_paths(self.ctx.settings.data_dir, params.scope, params.target)
        with tempfile.TemporaryDirectory(prefix="meetara-combine-") as tmp:
            work = Path(tmp)
            train, evaluation = {}, {}
            for part in params.parts:
                train[part.domain] = await self.ctx.artifacts.fetch(part.dataset, work / f"{part.domain}.jsonl")
                evaluation[part.domain] = await self.ctx.artifacts.fetch(
                    part.eval_dataset, work / f"{part.domain}_eval.jsonl"
                )
            try:
                per_domain = await anyio.to_thread.run_sync(interleave, train, train_path)
                eval_counts = await anyio.to_thread.run_sync(interleave, evaluation, eval_path)
            except ValueError as exc:
                raise InvalidParams(f"a part is not a conversation dataset: {exc}") from None
        return CombineOutput(
            dataset=await self.ctx.artifacts.put_file(train_path, media_type="application/jsonl"),
            eval_dataset=await self.ctx.artifacts.put_file(eval_path, media_type="application/jsonl"),
            path=str(train_path),
            eval_path=str(eval_path),
            stats=await anyio.to_thread.run_sync(dataset_stats, train_path),
            eval_samples=sum(eval_counts.values()),
            samples_per_domain=per_domain,
        )

    @tool(read_only=True)
    async def list_generators(self, params: ListGeneratorsInput) -> ListGeneratorsOutput:
        """The generators this agent offers and whether each can run here."""
        teacher_problem = teacher_requirement(None)
        return ListGeneratorsOutput(
            generators=[
                GeneratorInfo(
                    name="compositional",
                    description="Offline default: composes conversations from per-domain knowledge in configs.",
                    available=True,
                    requirement=None,
                ),
                GeneratorInfo(
                    name="teacher",
                    description="A teacher LLM (a GGUF file via llama-cpp-python, or an OpenAI-compatible endpoint) "
                    "writes conversations in the same schema; malformed output is rejected.",
                    available=teacher_problem is None,
                    requirement=teacher_problem,
                ),
                GeneratorInfo(
                    name="mixed",
                    description="The teacher LLM rewrites each compositional draft in fresh words (same labels, "
                    "structured output); cheaper than writing from scratch, more varied than the templates.",
                    available=teacher_problem is None,
                    requirement=teacher_problem,
                ),
            ]
        )

    @tool(read_only=True)
    async def check_teacher(self, params: CheckTeacherInput) -> CheckTeacherOutput:
        """Whether a teacher LLM can be used: the GGUF file exists, or the endpoint answers and serves the model."""
        return await _check_teacher(params.teacher)

    @tool(read_only=True)
    async def dataset_stats(self, params: DatasetStatsInput) -> DatasetStats:
        """Measure a dataset: sizes, emotions, topics, turn lengths and distinct 3-gram ratio."""
        with tempfile.TemporaryDirectory(prefix="meetara-stats-") as tmp:
            path = await self.ctx.artifacts.fetch(params.dataset, Path(tmp) / "data.jsonl")
            try:
                return await anyio.to_thread.run_sync(dataset_stats, path)
            except ValueError as exc:
                raise InvalidParams(f"not a conversation dataset: {str(exc).splitlines()[0]}") from None


async def _check_teacher(settings: TeacherSettings) -> CheckTeacherOutput:
    problem = teacher_requirement(settings)
    if problem or settings.base_url is None:
        return CheckTeacherOutput(ok=problem is None, reason=problem, models=[])
    try:
        models = await list_models(settings)
    except TeacherUnavailable as exc:
        return CheckTeacherOutput(ok=False, reason=str(exc), models=[])
    if models and settings.model not in models:
        reason = f"{settings.base_url} does not serve model {settings.model!r}; it serves: {', '.join(models[:10])}"
        return CheckTeacherOutput(ok=False, reason=reason, models=models)
    return CheckTeacherOutput(ok=True, reason=None, models=models or [])


def _usage(generator: CompositionalGenerator | TeacherGenerator) -> TeacherUsage:
    return generator.usage if isinstance(generator, TeacherGenerator) else TeacherUsage()


def _material_root(catalog_dir: Path | None) -> Path | None:
    if catalog_dir is not None and (catalog_dir / "material").is_dir():
        return catalog_dir / "material"
    return None


class _Loop:
    """State of one generate → filter feedback loop."""

    def __init__(
        self,
        agent: DataGenerationAgent,
        ctx: CallContext,
        params: GenerateInput,
        domain: Domain,
        generator: CompositionalGenerator | TeacherGenerator,
        work: Path,
    ) -> None:
        self.agent = agent
        self.ctx = ctx
        self.params = params
        self.domain = domain
        self.generator = generator
        self.work = work
        self.kept_files: list[Path] = []
        self.kept_refs: list[ArtifactRef] = []
        self.kept = 0
        self.generated = 0
        self.rounds = 0
        self.rejections: Counter[str] = Counter()
        self.topic_weights: dict[str, float] | None = None
        self._next_index = 0

    async def run(self) -> None:
        p = self.params
        while self.kept < p.count and self.rounds < p.max_rounds:
            self.rounds += 1
            need = p.count - self.kept
            rate = self.kept / self.generated if self.generated else 1.0
            size = need if self.rounds == 1 else min(math.ceil(need / max(rate, 0.2) * 1.1) + 5, need * 5)
            batch = self.work / f"round{self.rounds}.jsonl"
            await self._generate(batch, size)
            if not p.filter:
                self.kept_files.append(batch)
                self.kept += size
                continue
            await self._filter(batch, size)

    async def _generate(self, batch: Path, size: int) -> None:
        start, self._next_index = self._next_index, self._next_index + size
        weights = self.topic_weights

        report_progress = self.ctx.progress_reporter()

        def progress(done: int) -> None:
            report_progress(*self._progress("generate", self.kept + done))

        if isinstance(self.generator, TeacherGenerator):
            last = 0.0

            async def answered(done: int) -> None:
                nonlocal last
                if done == size or time.monotonic() - last >= _TEACHER_PROGRESS_S:
                    last = time.monotonic()
                    await self.ctx.progress(*self._progress("generate", self.kept + done))

            samples = await self.generator.generate(
                self.params.seed, range(start, start + size), topic_weights=weights, progress=answered
            )
            await anyio.to_thread.run_sync(lambda: write_batch(batch, samples))
            self.generated += size
            return

        generator = self.generator

        def produce() -> int:
            samples = (generator.sample(self.params.seed, i, topic_weights=weights) for i in range(start, start + size))
            return write_batch(batch, samples, progress=progress)

        await anyio.to_thread.run_sync(produce)
        self.generated += size

    async def _filter(self, batch: Path, size: int) -> None:
        agent = self.agent
        ref = await agent.ctx.artifacts.put_file(batch, media_type="application/jsonl")
        result = await agent.ctx.client.call_model(
            "quality_assurance",
            "filter_dataset",
            FilterDatasetInput(dataset=ref, domain=self.domain.name, against=self.kept_refs),
            FilterDatasetOutput,
            timeout=max(_FILTER_FLOOR_S, size * _FILTER_SECONDS_PER_SAMPLE * 4),
            trace_id=self.ctx.trace_id,
        )
        kept_path = self.work / f"round{self.rounds}.kept.jsonl"
        await agent.ctx.artifacts.fetch(result.kept, kept_path)
        self.kept_files.append(kept_path)
        self.kept_refs.append(result.kept)
        self.kept += result.report.kept
        for rule in result.report.rules:
            self.rejections[rule.rule] += rule.rejected
        rejections_path = await agent.ctx.artifacts.fetch(
            result.rejections, self.work / f"round{self.rounds}.rej.jsonl"
        )
        self.topic_weights = await anyio.to_thread.run_sync(_topic_pass_rates, batch, rejections_path)
        agent.log.info(
            "round filtered",
            domain=self.domain.name,
            round=self.rounds,
            generated=size,
            kept=result.report.kept,
            pass_rate=round(result.report.pass_rate, 3),
        )
        await self.ctx.progress(*self._progress("filter", self.kept))

    def _progress(self, stage: str, done: int) -> tuple[float, float, str]:
        """Progress as (samples, samples wanted, status)."""
        return min(done, self.params.count), self.params.count, f"{self.domain.name}: {stage}, round {self.rounds}"


def _topic_pass_rates(batch: Path, rejections: Path) -> dict[str, float]:
    """Pass rate per topic in a batch: the next round draws topics in proportion to it."""
    rejected = set()
    with open(rejections, encoding="utf-8") as f:
        for line in f:
            rejected.add(json.loads(line)["id"])
    total: Counter[str] = Counter()
    passed: Counter[str] = Counter()
    with open(batch, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            topic = record.get("topic") or "(none)"
            total[topic] += 1
            passed[topic] += record["id"] not in rejected
    return {topic: max(passed[topic] / total[topic], 0.05) for topic in total}
