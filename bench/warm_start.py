"""Warm versus cold: does starting from a similar domain's adapter reach the same loss in fewer steps?

    python -m bench.warm_start [--first mental_health] [--second stress_management] [--steps 24]
        [--samples 300] [--base PATH.gguf]

On the pip-shipped SmolLM2 (or ``--base``), in an embedded swarm, with the agents' own tools:
generate both domains' data, train FIRST cold and index it in Knowledge Transfer, train SECOND
cold, ask Knowledge Transfer what SECOND should start from, train SECOND again from that adapter,
and print Knowledge Transfer's comparison: the cold run's final (smoothed) training loss, and the
first step at which the warm run got there. Every run uses the CPU default's learning rate and
batch, the same data, the same number of steps.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from agents.data_generation import DataGenerationAgent
from agents.gpu_optimization import GpuOptimizationAgent
from agents.knowledge_transfer import KnowledgeTransferAgent
from agents.quality_assurance import QualityAssuranceAgent
from bench._settings import DAY_S, embedded_settings
from protocol.agents.data_generation import GenerateOutput
from protocol.agents.gpu_optimization import TrainOutput
from protocol.agents.knowledge_transfer import ListTransfersOutput, Recommendation
from runtime import SwarmClient, open_swarm

LONG = DAY_S


async def _train(
    client: SwarmClient, domain: str, data: GenerateOutput, args: argparse.Namespace, warm: Any = None
) -> TrainOutput:
    arguments: dict[str, Any] = {
        "scope": "domain",
        "target": domain,
        "dataset": data.dataset,
        "eval_dataset": data.eval_dataset,
        "training": {"max_steps": args.steps, "effective_batch": 4, "learning_rate": 1e-3},
        **({"warm_start": warm} if warm is not None else {}),
        **({"base_model": args.base} if args.base else {}),
    }
    started = time.perf_counter()
    out = await client.call_model("gpu_optimization", "train", arguments, TrainOutput, timeout=LONG)
    label = "warm" if warm is not None else "cold"
    m = out.metrics
    print(f"{domain} {label}: {m.steps} steps in {time.perf_counter() - started:.0f}s, final loss {m.final_loss}, "
          f"held-out {m.eval_loss_base} -> {m.eval_loss}")  # fmt: skip
    return out


async def _register(
    client: SwarmClient, domain: str, data: GenerateOutput, out: TrainOutput, base: str, warm_from: str | None
) -> None:
    metrics = out.metrics
    arguments = {
        "domain": domain,
        "base_model": base,
        "adapter": out.adapter,
        "dataset": data.dataset,
        "job_id": f"bench-{domain}-{'warm' if warm_from else 'cold'}",
        "final_loss": metrics.final_loss,
        "eval_loss": metrics.eval_loss,
        "steps": metrics.steps,
        "loss_curve": metrics.loss_curve,
        "warm_started_from": warm_from,
    }
    await client.call("knowledge_transfer", "register", arguments, timeout=LONG)


async def _run(args: argparse.Namespace, root: Path) -> ListTransfersOutput:
    settings = embedded_settings(root, "warm-start")
    agents = [DataGenerationAgent, QualityAssuranceAgent, GpuOptimizationAgent, KnowledgeTransferAgent]
    base = args.base or "default"
    async with open_swarm(settings, agents) as swarm:
        client = swarm.client
        data = {
            d: await client.call_model(
                "data_generation", "generate", {"domain": d, "count": args.samples}, GenerateOutput, timeout=LONG
            )
            for d in (args.first, args.second)
        }
        first = await _train(client, args.first, data[args.first], args)
        await _register(client, args.first, data[args.first], first, base, None)
        cold = await _train(client, args.second, data[args.second], args)
        await _register(client, args.second, data[args.second], cold, base, None)
        advice = await client.call_model(
            "knowledge_transfer",
            "recommend",
            {"domain": args.second, "base_model": base, "dataset": data[args.second].dataset},
            Recommendation,
        )
        print(f"{args.second}: most similar {advice.candidates[:3]}, threshold {advice.threshold}")
        source = advice.adapter if advice.domain == args.first else first.adapter
        warm = await _train(client, args.second, data[args.second], args, warm=source)
        await _register(client, args.second, data[args.second], warm, base, args.first)
        return await client.call_model("knowledge_transfer", "transfers", {}, ListTransfersOutput)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first", default="mental_health")
    parser.add_argument("--second", default="stress_management")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--base", default=None, help="a base GGUF instead of the pip-shipped SmolLM2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meetara-bench-warm-") as tmp:
        started = time.perf_counter()
        transfers = anyio.run(_run, args, Path(tmp))
        for c in transfers.comparisons:
            print(json.dumps(c.model_dump(mode="json")))
        print(f"benchmark wall {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
