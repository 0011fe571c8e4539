"""Training benchmark: this trainer against a plain transformers Trainer + peft baseline, same process.

    python -m bench.train [--base PATH.gguf] [--steps 8] [--batch 4] [--samples 400]

Both train the same LoRA (r=8, all linear layers) on the same base model and the same
general_health conversations (assistant-only labels in both) for the same number of optimizer
steps with the same batch size. The baseline pads each batch to its longest conversation and
computes the output head on every position, as Trainer does; ours packs rows and runs the head
only where a token carries loss. Reported: real (non-padding) training tokens/s of each, their
ratio, and both models' held-out loss on the same evaluation conversations. A two-step round of
both runs first, unmeasured, so neither pays the process's warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.gpu_optimization.device import profile_device
from agents.gpu_optimization.planning import plan_training
from agents.gpu_optimization.trainer import TrainingRun, _encode_file, _evaluate, run_training
from agents.llm.base_model import load_base_model, load_tokenizer, resolve_base_model
from agents.text.signals import load_signals
from protocol import ArtifactRef
from protocol.agents.gpu_optimization import TrainInput
from runtime import load_catalog


def _write(path: Path, domain: str, start: int, count: int) -> Path:
    catalog = load_catalog()
    d = catalog.domain(domain)
    generator = CompositionalGenerator(d, load_material(d.category, d.name), load_common(), load_signals())
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + count):
            f.write(generator.sample(0, i).model_dump_json(exclude_none=True) + "\n")
    return path


def _baseline(run: TrainingRun, steps: int, batch: int, eval_loss: Any) -> tuple[float, float, float]:
    """(tokens/s, held-out loss, seconds) of transformers.Trainer + peft without packing."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    plan = run.plan
    tokenizer = load_tokenizer(run.base, run.cache_dir)
    samples = _encode_file(tokenizer, run.train_path, plan.sequence_length)
    model = load_base_model(run.base, run.cache_dir, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=plan.lora_r,
            lora_alpha=plan.lora_alpha,
            lora_dropout=plan.lora_dropout,
            target_modules=plan.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    counted = [0]
    pad = int(tokenizer.pad_token_id)

    def collate(features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad)
        labels = torch.full((len(features), width), -100)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["labels"]), 1
            counted[0] += n
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    dataset = [{"input_ids": s.input_ids, "labels": s.labels} for s in samples]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=plan.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=plan.warmup_steps,
            logging_steps=steps,
            save_strategy="no",
            report_to=[],
            use_cpu=plan.device.kind == "cpu",
            seed=plan.seed,
            remove_unused_columns=False,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)  # type: ignore[arg-type]
        result = trainer.train()
    seconds = float(result.metrics["train_runtime"])
    return counted[0] / seconds, eval_loss(model, pad), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None, help="base model (.gguf, folder or hub id); default SmolLM2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--micro", type=int, default=None, help="rows per forward pass (default: --batch)")
    parser.add_argument("--cache", type=Path, default=Path("data/cache/base_models"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="meetara-bench-train-") as tmp:
        work = Path(tmp)
        train = _write(work / "train.jsonl", "general_health", 0, args.samples)
        evaluation = _write(work / "eval.jsonl", "general_health", 100_000, 32)
        placeholder = ArtifactRef(uri="file:///unused", sha256="0" * 64, size=0)
        job = TrainInput(
            target="general_health",
            dataset=placeholder,
            base_model=args.base,
            training={
                "max_steps": args.steps,
                "effective_batch": args.batch,
                "micro_batch": args.micro or args.batch,
                "learning_rate": 5e-4,
            },
        )
        plan = plan_training(job, profile_device(), load_catalog())
        base = resolve_base_model(args.base)
        run = TrainingRun(
            plan=plan,
            base=base,
            cache_dir=args.cache,
            run_dir=work / "ours",
            train_path=train,
            eval_path=evaluation,
            run_key="bench",
            resume=False,
        )
        tokenizer = load_tokenizer(base, args.cache)
        eval_samples = _encode_file(tokenizer, evaluation, plan.sequence_length)

        def eval_loss(model: Any, pad: int) -> float:
            return float(_evaluate(model, eval_samples, plan, pad, None) or float("nan"))

        # CPU kernels and the allocator warm up over the first passes of each shape; a short round
        # of both trainers first keeps that cost out of whichever would otherwise run first.
        for steps in (2, args.steps):
            plan_n = plan.model_copy(update={"max_steps": steps})
            run_n = dataclasses.replace(run, plan=plan_n, run_dir=work / f"ours-{steps}")
            started = time.monotonic()
            ours = run_training(run_n).metrics
            ours_wall = time.monotonic() - started
            base_rate, base_loss, base_seconds = _baseline(run_n, steps, args.batch, eval_loss)

    print(f"base model: {base.name}   steps: {args.steps}   batch: {args.batch} rows   device: {plan.device.name}")
    print(
        f"ours:     {ours.tokens_per_second:8.1f} tokens/s  loop {ours.seconds:6.1f} s (wall {ours_wall:.1f} s)  "
        f"padding {ours.padding_fraction:.1%}  held-out loss {ours.eval_loss:.4f} (base {ours.eval_loss_base:.4f})"
    )
    print(f"baseline: {base_rate:8.1f} tokens/s  loop {base_seconds:6.1f} s  held-out loss {base_loss:.4f}")
    print(f"ratio (ours / baseline tokens/s): {ours.tokens_per_second / base_rate:.2f}x")


if __name__ == "__main__":
    main()
