"""The Knowledge Transfer agent's typed tool surface."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import numpy as np

from agents.knowledge_transfer.index import DomainIndex
from agents.llm.chat_format import load_conversations
from agents.llm.embeddings import default_embedder
from protocol import ArtifactRef
from protocol.agents.knowledge_transfer import (
    IndexedDomain,
    ListTransfersInput,
    ListTransfersOutput,
    Recommendation,
    RecommendInput,
    RegisterDomainInput,
    RegisterDomainOutput,
    SimilarDomain,
)
from runtime import Agent, AgentContext, Domain, tool

SIMILARITY_THRESHOLD = 0.5
"""Cosine similarity at or above which a new domain warm-starts from the most similar trained one.

Measured over the 62 catalogue descriptions: the median nearest-neighbour similarity is 0.47;
close pairs pass (legal and legal_business 0.79, mental_health and stress_management 0.52, and
0.70 once 32 user turns of each one's data join in), loose ones do not (general_health and
nutrition 0.25; 0.37 with data)."""
SAMPLE_TURNS = 32
"""User turns of a dataset that join the domain description in its embedding."""


class KnowledgeTransferAgent(Agent):
    """Indexes finished domains and recommends the most similar one to warm-start a new domain from."""

    name = "knowledge_transfer"
    description = (
        "Index of trained domains (all-MiniLM-L6-v2 embeddings of description and data), warm-start "
        "recommendations, and warm-versus-cold steps to the same loss."
    )

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self.index = DomainIndex(ctx.records)

    async def _embedding(self, domain: Domain, dataset: ArtifactRef | None) -> list[float]:
        texts = [domain.description, *(f"{domain.name.replace('_', ' ')}: {s}" for s in domain.subjects)]
        if dataset is not None:
            with tempfile.TemporaryDirectory(prefix="meetara-kt-") as tmp:
                path = await self.ctx.artifacts.fetch(dataset, Path(tmp) / "data.jsonl")
                for messages in load_conversations(path):
                    texts.extend(m["content"] for m in messages if m["role"] == "user")
                    if len(texts) >= SAMPLE_TURNS + len(domain.subjects) + 1:
                        break

        def encode() -> list[float]:
            vectors = default_embedder().encode(texts)
            mean = vectors.mean(axis=0)
            return [float(x) for x in mean / np.linalg.norm(mean)]

        return await anyio.to_thread.run_sync(encode)

    @tool(idempotent=True)
    async def register(self, params: RegisterDomainInput) -> RegisterDomainOutput:
        """Add a trained domain (its adapter, data sample and loss curve) to the index."""
        domain = self.ctx.catalog.domain(params.domain)
        embedding = await self._embedding(domain, params.dataset)
        entry = IndexedDomain(**params.model_dump(exclude={"dataset"}), embedding=embedding)
        await self.index.put(entry)
        indexed = len(await self.index.domains(params.base_model))
        self.log.info("domain indexed", domain=params.domain, warm_from=params.warm_started_from, indexed=indexed)
        return RegisterDomainOutput(domain=params.domain, indexed=indexed)

    @tool(read_only=True)
    async def recommend(self, params: RecommendInput) -> Recommendation:
        """The trained domain (same base model) most similar to ``domain``, if similar enough to warm-start from."""
        domain = self.ctx.catalog.domain(params.domain)
        vector = np.asarray(await self._embedding(domain, params.dataset))
        others = [d for d in await self.index.domains(params.base_model) if d.domain != params.domain]
        scored = sorted(
            ((float(vector @ np.asarray(d.embedding)), d) for d in others), key=lambda x: x[0], reverse=True
        )
        candidates = [SimilarDomain(domain=d.domain, similarity=round(s, 4)) for s, d in scored]
        best = scored[0] if scored and scored[0][0] >= SIMILARITY_THRESHOLD else None
        return Recommendation(
            domain=best[1].domain if best else None,
            similarity=round(best[0], 4) if best else None,
            adapter=best[1].adapter if best else None,
            threshold=SIMILARITY_THRESHOLD,
            candidates=candidates,
        )

    @tool(read_only=True)
    async def transfers(self, params: ListTransfersInput) -> ListTransfersOutput:
        """Domains trained both cold and warm: steps each needed to reach the cold run's final loss."""
        return ListTransfersOutput(comparisons=await self.index.comparisons())
