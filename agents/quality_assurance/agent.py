"""The Quality Assurance agent's typed tool surface (data side)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import anyio
import anyio.to_thread

from agents.llm.base_model import base_gguf, load_tokenizer, resolve_base_model
from agents.llm.chat_format import encode_conversation, load_conversations
from agents.llm.layout import build_folder, layout_of
from agents.quality_assurance.chat import ChatModel
from agents.quality_assurance.data_filter import ALL_RULES, DataFilter
from agents.quality_assurance.eval_sets import load_eval_set
from agents.quality_assurance.evaluation import EvalJudges
from agents.quality_assurance.model_checks import load_model_quality
from agents.quality_assurance.model_validation import ModelUnderTest, validate_model_files
from agents.quality_assurance.relevance import DomainReferences, Embedder, default_embedder
from agents.quality_assurance.router import RouterSettings, load_router_settings, rank, route_request
from agents.quality_assurance.thresholds import load_thresholds
from agents.text.crisis import CrisisDetector, default_detector
from agents.text.signals import load_signals
from protocol import InvalidParams
from protocol.agents.gguf_creation import ListModelsOutput, ModelMetadata
from protocol.agents.quality_assurance import (
    AskInput,
    AskOutput,
    DomainMatch,
    FilterDatasetInput,
    FilterDatasetOutput,
    FilterReport,
    RouteInput,
    RouteOutput,
    ValidateModelInput,
    ValidateModelOutput,
)
from runtime import Agent, CallContext, tool, utc_now_iso, write_json

__all__ = ["QualityAssuranceAgent"]


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


class QualityAssuranceAgent(Agent):
    """The gate: filters training data, and validates models before they may be deployed."""

    name = "quality_assurance"
    description = (
        "Data filtering (duplicates, length, PII, crisis safety, empathy, relevance) and model validation "
        "(GGUF format, llama.cpp loading, held-out perplexity, generations, crisis replies); routes a "
        "request to the deployed model that should answer it, and answers with it."
    )
    concurrency = 2

    _relevance: tuple[Embedder, DomainReferences] | None = None
    _chat: ChatModel | None = None

    async def _relevance_model(self) -> tuple[Embedder, DomainReferences]:
        """The embedder and all domains' reference vectors, built on first use."""
        if self._relevance is None:
            catalog = self.ctx.catalog

            def build() -> tuple[Embedder, DomainReferences]:
                embedder = default_embedder()
                return embedder, DomainReferences.from_catalog(embedder, catalog)

            self._relevance = await anyio.to_thread.run_sync(build)
        return self._relevance

    async def _crisis_detector(self) -> CrisisDetector:
        """The crisis detector (trained on the labelled set on first use; a few seconds)."""
        settings = self.ctx.settings
        return await anyio.to_thread.run_sync(lambda: default_detector(settings.catalog_dir, settings.model_cache))

    @tool(idempotent=True)
    async def filter_dataset(self, params: FilterDatasetInput, ctx: CallContext) -> FilterDatasetOutput:
        """Filter a conversation dataset with every data rule; returns the kept samples and a report.

        Rules: schema, turn length, PII (reject or scrub), crisis safety (crisis messages must be
        answered with real help, never a diagnosis), empathy (feelings are acknowledged), domain
        relevance (embedding similarity), coherence (the reply answers its own question better than
        most of the dataset's other replies do), exact and near duplicates (MinHash LSH), also
        against the ``against`` datasets.
        """
        domain = self.ctx.catalog.domain(params.domain)
        settings = self.ctx.settings
        thresholds = load_thresholds(domain.category, settings.catalog_dir)
        if params.pii is not None:
            thresholds = thresholds.model_copy(update={"pii": params.pii})
        rules = tuple(params.rules) if params.rules is not None else ALL_RULES
        if "schema" not in rules:
            rules = ("schema", *rules)
        needs_embeddings = "relevance" in rules or "coherence" in rules
        embedder, references = await self._relevance_model() if needs_embeddings else (None, None)
        crisis = await self._crisis_detector() if "crisis_safety" in rules else None
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
                crisis=crisis,
                rules=rules,
            )
            last = [0.0]
            report_progress = ctx.progress_reporter()

            def progress(done: int) -> None:
                if time.monotonic() - last[0] >= 2.0:
                    last[0] = time.monotonic()
                    report_progress(done, total, f"filtering {domain.name}")

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

    @tool(idempotent=True)
    async def validate_model(self, params: ValidateModelInput, ctx: CallContext) -> ValidateModelOutput:
        """Validate a model's GGUF files through llama.cpp; the go/no-go gate before deploy.

        Checks: GGUF header and tensors, hashes against the metadata, loading (base + adapter and
        the merged file), held-out perplexity of the adapted model against the base (must improve by
        the configured margin), replies that are non-empty, not degenerate and stop at the
        end-of-turn token, safe crisis replies for crisis-sensitive domains. The score (percent of
        checks passed) is compared with the category's quality target. The report is written
        beside the model.
        """
        catalog, settings = self.ctx.catalog, self.ctx.settings
        try:
            metadata = ModelMetadata.model_validate_json(await self.ctx.artifacts.read_bytes(params.metadata))
        except ValueError as exc:
            raise InvalidParams(f"the metadata is not valid model metadata: {exc}") from exc
        layout = layout_of(metadata.model_id, metadata.scope, metadata.domain, metadata.category, catalog)
        domains = [catalog.domain(d) for d in metadata.domains]
        target = min(catalog.category(d.category).quality_target for d in domains)
        crisis = any(d.crisis_safety for d in domains)
        base = resolve_base_model(params.base_model)
        # llama.cpp runs the base for the adapter and perplexity checks: a folder or hub base is
        # converted to GGUF once and cached.
        base_file = await anyio.to_thread.run_sync(base_gguf, base, settings.model_cache)
        settings_quality = load_model_quality(settings.catalog_dir)
        signals = load_signals(settings.catalog_dir)
        try:
            eval_set = load_eval_set(metadata.category or domains[0].category, settings.catalog_dir)
        except (OSError, ValueError) as exc:
            raise InvalidParams(f"cannot read the evaluation set: {exc}") from exc
        embedder, references = await self._relevance_model()
        judges = EvalJudges(
            detector=await self._crisis_detector(),
            embedder=embedder,
            references=references,
            category_of={name: d.category for name, d in catalog.domains.items()},
        )
        with tempfile.TemporaryDirectory(prefix="meetara-model-qa-") as tmp:
            work = Path(tmp)
            files: dict[str, Path] = {}
            for file in metadata.files:
                if file.kind in ("adapter", "merged") and file.artifact is not None:
                    files[file.kind] = await self.ctx.artifacts.fetch(file.artifact, work / Path(file.path).name)
            eval_path = await self.ctx.artifacts.fetch(params.eval_dataset, work / "eval.jsonl")

            def prepare() -> ModelUnderTest:
                tokenizer = load_tokenizer(base, settings.model_cache)
                conversations = list(load_conversations(eval_path))
                samples = []
                for messages in conversations[: params.max_eval_samples]:
                    encoded = encode_conversation(tokenizer, messages, max_tokens=1024)
                    if encoded is not None:
                        samples.append(encoded)
                prompts = [m[:2] for m in conversations if m[0]["role"] == "system" and m[1]["role"] == "user"]
                system = metadata.system_prompt or (
                    conversations[0][0]["content"] if conversations and conversations[0][0]["role"] == "system" else ""
                )
                references = []
                for item in eval_set.items:
                    if item.reference is None:
                        continue
                    turns = [
                        {"role": "system", "content": system},
                        {"role": "user", "content": item.text},
                        {"role": "assistant", "content": item.reference},
                    ]
                    encoded = encode_conversation(tokenizer, turns, max_tokens=1024)
                    if encoded is not None:
                        references.append(encoded)
                return ModelUnderTest(
                    metadata=metadata,
                    base_gguf=base_file,
                    adapter=files.get("adapter"),
                    merged=files.get("merged"),
                    eval_samples=samples,
                    prompts=prompts[: params.generation_prompts],
                    system_prompt=system,
                    crisis_sensitive=crisis,
                    target=target,
                    eval_set=eval_set,
                    reference_samples=references,
                )

            model = await anyio.to_thread.run_sync(prepare)
            if not model.eval_samples:
                raise InvalidParams("the evaluation dataset has no usable conversations")

            report_progress = ctx.progress_reporter()

            def progress(message: str) -> None:
                report_progress(0, None, message)

            report = await anyio.to_thread.run_sync(
                lambda: validate_model_files(model, settings_quality, signals, utc_now_iso(), progress, judges)
            )
        report_path = build_folder(settings.data_dir, layout) / layout.qa_report_name
        await anyio.to_thread.run_sync(write_json, report_path, report)
        ref = await self.ctx.artifacts.put_file(report_path, media_type="application/json")
        self.log.info(
            "model validated",
            model=report.model_id,
            passed=report.passed,
            score=report.score,
            perplexity_base=report.perplexity_base,
            perplexity_adapted=report.perplexity_adapted,
        )
        return ValidateModelOutput(report=report, report_path=str(report_path), report_artifact=ref)

    async def _route(self, text: str, domain: str | None, settings: RouterSettings) -> RouteOutput:
        catalog = self.ctx.catalog
        # (an unknown domain is refused here, with the catalogue's message)
        forced = (
            DomainMatch(domain=domain, category=catalog.domain(domain).category, similarity=1.0) if domain else None
        )
        embedder, references = await self._relevance_model()
        detector = await self._crisis_detector()
        deployed = await self.ctx.client.call_model(
            "gguf_creation", "list_models", {"lane": "production"}, ListModelsOutput
        )
        matches = await anyio.to_thread.run_sync(lambda: rank(references, embedder, catalog, [text], settings.top_k)[0])
        return await anyio.to_thread.run_sync(
            lambda: route_request(matches, deployed.models, detector, text, settings, forced=forced)
        )

    @tool(read_only=True)
    async def route(self, params: RouteInput) -> RouteOutput:
        """Which deployed model answers a request: the closest domains (embedding ranking over the
        catalogue) with a confidence, the model picked (the domain's, else its category's or the
        universal one), and the real help a crisis message gets first (the crisis detector's)."""
        settings = await anyio.to_thread.run_sync(load_router_settings, self.ctx.settings.catalog_dir)
        return await self._route(params.text, params.domain, settings)

    @tool(read_only=True)
    async def ask(self, params: AskInput, ctx: CallContext) -> AskOutput:
        """Answer a message with the deployed model the router picks (or ``domain``'s), streaming the
        reply as progress (each new piece as the message and ``meta.text``). A crisis message gets real
        help first, whatever the model says."""
        settings = self.ctx.settings
        router = await anyio.to_thread.run_sync(load_router_settings, settings.catalog_dir)
        routed = await self._route(params.text, params.domain, router)
        if routed.model_file is None:
            if routed.crisis_help:  # the help does not wait for a model
                return AskOutput(route=routed, reply="", answer=routed.crisis_help, tokens=0)
            raise InvalidParams(f"no model can answer: {routed.reason}")
        sampling = (await anyio.to_thread.run_sync(load_model_quality, settings.catalog_dir)).generation
        if self._chat is None:
            self._chat = ChatModel(threads=os.cpu_count())
        chat, report = self._chat, ctx.progress_reporter()
        limit = params.max_tokens or router.max_reply_tokens
        pending: list[str] = []
        flushed = [time.monotonic(), 0]

        def on_text(text: str) -> None:  # a progress event every quarter second, not every token
            pending.append(text)
            flushed[1] += 1
            if time.monotonic() - flushed[0] >= 0.25:
                chunk = "".join(pending)  # as the message too: MCP clients get progress messages only
                report(flushed[1], limit, chunk, meta={"text": chunk})
                pending.clear()
                flushed[0] = time.monotonic()

        messages = [t.model_dump() for t in params.history] + [{"role": "user", "content": params.text}]
        path = settings.models_dir / routed.model_file
        try:
            reply, tokens = await anyio.to_thread.run_sync(lambda: chat.reply(path, messages, sampling, limit, on_text))
        except (InvalidParams, ValueError, RuntimeError) as exc:
            if not routed.crisis_help:
                raise InvalidParams(f"{routed.model_id} could not answer: {exc}") from exc
            self.log.warning("model failed on a crisis message; answered with the help alone", error=str(exc))
            reply, tokens = "", 0
        if pending:  # the tail the last quarter second brought (back on the event loop here)
            chunk = "".join(pending)
            await ctx.progress(tokens, limit, chunk, meta={"text": chunk})
        answer = "\n\n".join(part for part in (routed.crisis_help, reply) if part)
        self.log.info("answered", model=routed.model_id, domain=routed.domain, crisis=routed.crisis, tokens=tokens)
        return AskOutput(route=routed, reply=reply, answer=answer, tokens=tokens)
