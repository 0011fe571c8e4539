"""The router: which deployed model answers a free-text request, and the crisis help that comes first.

A request is ranked against every domain's reference vector (the relevance rule's
``DomainReferences``). The top domain is taken when it is both close enough and clearly ahead of
the second; otherwise the close domains are named and their category's model (or the universal
model) answers, where one is deployed. Whatever model answers, a message the crisis detector flags
gets the configured real help first: the router never leaves that to a small model.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.quality_assurance.relevance import DomainReferences, Embedder
from agents.text.crisis import CrisisDetector
from protocol import InvalidParams
from protocol.agents.gguf_creation import ManifestEntry
from protocol.agents.quality_assurance import DomainMatch, RouteOutput
from runtime import Catalog, load_config

__all__ = [
    "LabelledRequest",
    "RouterSettings",
    "RoutingScores",
    "choose_model",
    "confident",
    "load_router_settings",
    "load_routing_set",
    "measure_routing",
    "rank",
    "route_request",
]


class RouterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    top_k: int = Field(ge=1, le=62)
    min_similarity: float = Field(ge=-1, le=1)
    min_margin: float = Field(ge=0, le=2)
    max_reply_tokens: int = Field(ge=8, le=4096)
    crisis_help: dict[str, str]
    """Per crisis kind (and ``default``), the help shown before any model reply."""

    def help_for(self, kind: str) -> str:
        return self.crisis_help.get(kind) or self.crisis_help["default"]


def load_router_settings(directory: Path | None = None) -> RouterSettings:
    settings = load_config(RouterSettings, directory, "router.yaml")
    if "default" not in settings.crisis_help:
        raise InvalidParams("router.yaml: crisis_help needs a default")
    return settings


def rank(
    references: DomainReferences, embedder: Embedder, catalog: Catalog, texts: list[str], top_k: int
) -> list[list[DomainMatch]]:
    """Per text, the ``top_k`` closest domains, closest first."""
    similarities = embedder.encode(texts) @ references.vectors.T
    out = []
    for row in similarities:
        order = np.argsort(-row)[:top_k]
        out.append(
            [
                DomainMatch(
                    domain=references.names[i],
                    category=catalog.domain(references.names[i]).category,
                    similarity=round(float(row[i]), 4),
                )
                for i in order
            ]
        )
    return out


def confident(matches: list[DomainMatch], settings: RouterSettings) -> bool:
    """The top domain is close enough and clearly ahead of the next."""
    top = matches[0].similarity
    second = matches[1].similarity if len(matches) > 1 else -1.0
    return top >= settings.min_similarity and top - second >= settings.min_margin


def _merged(entry: ManifestEntry) -> str | None:
    return next((f.path for f in entry.files if f.kind == "merged"), None)


def choose_model(
    matches: list[DomainMatch],
    sure: bool,
    deployed: list[ManifestEntry],
    *,
    forced: DomainMatch | None = None,
) -> tuple[str | None, ManifestEntry | None, str]:
    """(the domain taken, the production model that answers, why): the domain's own model when the
    pick is sure (or ``forced``), else that domain's (or the close domains') category model, else
    the universal one."""
    production = {e.model_id: e for e in deployed if e.lane == "production" and _merged(e)}
    close = ", ".join(f"{m.domain} ({m.similarity:.2f})" for m in matches)
    taken = forced or (matches[0] if sure else None)
    domain = taken.domain if taken else None
    if domain is not None and (entry := production.get(f"meetara_{domain}")) is not None:
        why = f"asked for {domain}" if forced else f"closest domain {domain} ({matches[0].similarity:.2f})"
        return domain, entry, why
    category = taken.category if taken else Counter(m.category for m in matches).most_common(1)[0][0]
    lead = f"no deployed model for {domain}" if domain else f"no clear domain (close: {close})"
    for model_id in (f"meetara_{category}_category", "meetara_universal_full", "meetara_universal_lite"):
        if (entry := production.get(model_id)) is not None:
            return domain, entry, f"{lead}; answered by {model_id}"
    return domain, None, f"{lead}, and no {category} category or universal model is deployed"


def route_request(
    matches: list[DomainMatch],
    deployed: list[ManifestEntry],
    detector: CrisisDetector,
    text: str,
    settings: RouterSettings,
    *,
    forced: DomainMatch | None = None,
) -> RouteOutput:
    """Who answers ``text`` (ranked as ``matches``), and the help its crisis, if any, gets first."""
    sure = confident(matches, settings)
    domain, entry, reason = choose_model(matches, sure, deployed, forced=forced)
    kind = detector.kind(text)
    return RouteOutput(
        matches=matches,
        domain=domain,
        confident=sure or forced is not None,
        reason=reason,
        model_id=entry.model_id if entry else None,
        version=entry.version if entry else None,
        model_file=_merged(entry) if entry else None,
        crisis=kind,
        crisis_help=settings.help_for(kind) if kind else None,
    )


class LabelledRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    domain: str
    text: str


class RoutingSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    requests: list[LabelledRequest]


def load_routing_set(directory: Path | None = None) -> RoutingSet:
    """The held-out labelled requests (``configs/routing_heldout.yaml``)."""
    return load_config(RoutingSet, directory, "routing_heldout.yaml")


class RoutingScores(BaseModel):
    """The router on labelled requests."""

    requests: int
    top1: float
    top3: float
    confident: float
    """Share of requests the router was sure of."""
    confident_top1: float
    """Top-1 accuracy among those."""
    misses: list[str]
    """``domain -> picked: text`` for each top-1 miss."""


def measure_routing(
    references: DomainReferences,
    embedder: Embedder,
    catalog: Catalog,
    requests: list[LabelledRequest],
    settings: RouterSettings,
) -> RoutingScores:
    unknown = {r.domain for r in requests} - set(catalog.domains)
    if unknown:
        raise InvalidParams(f"labelled requests name unknown domains: {sorted(unknown)}")
    ranked = rank(references, embedder, catalog, [r.text for r in requests], max(3, settings.top_k))
    top1 = [m[0].domain == r.domain for m, r in zip(ranked, requests, strict=True)]
    top3 = [r.domain in {x.domain for x in m[:3]} for m, r in zip(ranked, requests, strict=True)]
    sure = [confident(m, settings) for m in ranked]
    sure_hits = [hit for hit, s in zip(top1, sure, strict=True) if s]
    n = len(requests)
    return RoutingScores(
        requests=n,
        top1=sum(top1) / n,
        top3=sum(top3) / n,
        confident=sum(sure) / n,
        confident_top1=sum(sure_hits) / len(sure_hits) if sure_hits else 0.0,
        misses=[
            f"{r.domain} -> {m[0].domain}: {r.text}"
            for m, r, hit in zip(ranked, requests, top1, strict=True)
            if not hit
        ],
    )
