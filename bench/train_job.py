"""A job's train step alone, on this machine's device: what a tier's run costs here.

    python -m bench.train_job --dataset TRAIN.jsonl --eval EVAL.jsonl [--domain general_health]
        [--tier lightning] [--steps N] [--training JSON] [--base PATH.gguf] [--out DIR]

Calls the GPU Optimization agent's ``train`` tool the way the Conductor does (the tier's plan,
the micro-batch probed on CUDA, precision chosen by the device) in an embedded swarm, and
prints the plan, seconds per optimizer step, real training tokens/s and held-out loss before and
after. With ``--out`` the adapter and the tool's result are written there, so an adapter trained
on a rented GPU can be converted, validated and deployed on another machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import anyio

from agents.gpu_optimization import GpuOptimizationAgent
from bench._settings import embedded_settings
from protocol.agents.gpu_optimization import TrainOutput
from runtime import open_swarm


async def _train(args: argparse.Namespace, root: Path) -> TrainOutput:
    settings = embedded_settings(root, "train-job")
    async with open_swarm(settings, [GpuOptimizationAgent]) as swarm:
        dataset = await swarm.artifacts.put_file(args.dataset, media_type="application/jsonl")
        evaluation = await swarm.artifacts.put_file(args.eval, media_type="application/jsonl")
        arguments = {
            "scope": "domain",
            "target": args.domain,
            "tier": args.tier,
            "dataset": dataset,
            "eval_dataset": evaluation,
            "training": {**json.loads(args.training), **({"max_steps": args.steps} if args.steps else {})},
            **({"base_model": args.base} if args.base else {}),
        }
        result = await swarm.client.call_model("gpu_optimization", "train", arguments, TrainOutput)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            await swarm.artifacts.fetch(result.adapter, args.out / "adapter.safetensors")
            (args.out / "train_output.json").write_text(result.model_dump_json(indent=2))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="training split (JSONL)")
    parser.add_argument("--eval", type=Path, required=True, help="held-out split (JSONL)")
    parser.add_argument("--domain", default="general_health")
    parser.add_argument("--tier", default="lightning")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the tier's)")
    parser.add_argument("--base", default=None, help="base model (default: the pip-shipped SmolLM2)")
    parser.add_argument(
        "--training",
        default="{}",
        help="training overrides as JSON, e.g. '{\"crisis_weight\": 2}' (a CPU job's: configs/jobs.yaml)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the adapter and the result here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="meetara-train-job-"))
    try:
        result = anyio.run(_train, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    plan, m = result.plan, result.metrics
    print(f"device {plan.device.name}, precision {plan.precision}, micro-batch {m.micro_batch} x {m.grad_accumulation}")
    for reason in plan.reasons:
        print(f"  plan: {reason}")
    print(
        f"{m.steps} steps in {m.seconds:.1f}s: {m.seconds / max(m.steps, 1):.3f} s/step, "
        f"{m.tokens_per_second:,.0f} tokens/s, padding {m.padding_fraction:.1%}"
    )
    print(f"held-out loss {m.eval_loss_base} -> {m.eval_loss}; training loss {m.first_loss} -> {m.final_loss}")
    if m.decision_curve:
        print(f"crisis-decision loss {m.decision_curve[0][1]} -> {m.decision_curve[-1][1]}")


if __name__ == "__main__":
    main()
