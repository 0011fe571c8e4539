"""The router's domain accuracy: on held-out labelled requests, and on the material's situations.

    python -m bench.router_accuracy [--json]

``configs/routing_heldout.yaml`` was written apart from the router and is never tuned on; the
material's situations (every domain's ``topics[].situations``) are where the router's marks are
chosen. Prints top-1 and top-3 accuracy, the share the router is sure of, and its accuracy there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from agents.quality_assurance.relevance import DomainReferences, default_embedder
from agents.quality_assurance.router import (
    LabelledRequest,
    RoutingScores,
    load_router_settings,
    load_routing_set,
    measure_routing,
)
from runtime import load_catalog

MATERIAL = Path(__file__).resolve().parents[1] / "configs" / "material"


def material_situations() -> list[LabelledRequest]:
    out = []
    for path in sorted(MATERIAL.glob("*/*.yaml")):
        material = yaml.safe_load(path.read_text()) or {}
        for topic in material.get("topics", []):
            out += [LabelledRequest(domain=path.stem, text=s) for s in topic.get("situations", [])]
    return out


def _print(name: str, s: RoutingScores) -> None:
    print(
        f"{name}: {s.requests} requests, top-1 {s.top1:.3f}, top-3 {s.top3:.3f}, "
        f"sure of {s.confident:.3f} with top-1 {s.confident_top1:.3f} there"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument("--misses", action="store_true", help="list the held-out top-1 misses")
    args = parser.parse_args()
    catalog, settings, embedder = load_catalog(), load_router_settings(), default_embedder()
    references = DomainReferences.from_catalog(embedder, catalog)
    scores = {
        "heldout": measure_routing(references, embedder, catalog, load_routing_set().requests, settings),
        "material": measure_routing(references, embedder, catalog, material_situations(), settings),
    }
    if args.json:
        print(json.dumps({k: v.model_dump(exclude={"misses"}) for k, v in scores.items()}, indent=2))
        return
    for name, s in scores.items():
        _print(name, s)
    if args.misses:
        for line in scores["heldout"].misses:
            print(f"  - {line}")


if __name__ == "__main__":
    main()
