"""What QLoRA costs: LoRA on the full-precision base against LoRA on its 4-bit NF4 quantization.

    python -m bench.qlora [--base PATH.gguf] [--steps 24] [--batch 2] [--samples 200]

Both adapters start from the same initialisation and see the same rows of the same general_health
conversations for the same steps. Reported: the base's weight memory in each form, held-out loss
(perplexity) of the base alone, of the LoRA adapter, of the QLoRA adapter on the 4-bit base it was
trained on, and of the QLoRA adapter on the full-precision base (what a job merges and deploys: the
adapter learnt to correct quantized weights and is applied to unquantized ones), and the
seconds per step of each run. The product trains QLoRA on CUDA only; bitsandbytes' CPU kernels
make this comparison runnable here (slower per step than on a GPU: every layer is dequantized on
each forward).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from agents.gpu_optimization.device import profile_device
from agents.gpu_optimization.packing import collate_rows, pack_rows
from agents.gpu_optimization.planning import plan_training
from agents.gpu_optimization.trainer import _encode_file, _evaluate, _loss_sum
from agents.llm.adapter_file import apply_adapter, read_adapter, write_adapter
from agents.llm.base_model import BaseModelSource, load_base_model, load_tokenizer, resolve_base_model
from bench.train import _write
from protocol import ArtifactRef
from protocol.agents.gpu_optimization import TrainInput
from runtime import load_catalog


def _train(
    base: BaseModelSource,
    cache: Path,
    four_bit: bool,
    samples: list[Any],
    rows: list[list[int]],
    args: Any,
    pad: int,
    seq: int,
) -> tuple[Any, float]:
    """A LoRA adapter trained on the base (4-bit or not); the model and its seconds per step."""
    from peft import LoraConfig, get_peft_model

    model = load_base_model(base, cache, dtype=torch.float32, four_bit=four_bit)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    started = time.perf_counter()
    for step in range(args.steps):
        picked = [rows[(step * args.batch + i) % len(rows)] for i in range(args.batch)]
        batch = collate_rows(picked, samples, row_len=seq, pad_id=pad, packed=True)
        loss = _loss_sum(model, batch, "cpu", None)
        (loss.weighted / loss.tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = (time.perf_counter() - started) / args.steps
    print(f"{'QLoRA' if four_bit else 'LoRA'}: {args.steps} steps, {seconds:.1f} s/step", flush=True)
    return model, seconds


def main() -> None:
    from peft import LoraConfig, get_peft_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None, help="base model (.gguf, folder or hub id); default SmolLM2")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cache", type=Path, default=Path("data/cache/base_models"))
    args = parser.parse_args()

    base = resolve_base_model(args.base)
    placeholder = ArtifactRef(uri="file:///unused", sha256="0" * 64, size=0)
    plan = plan_training(TrainInput(target="general_health", dataset=placeholder), profile_device(), load_catalog())
    seq = plan.sequence_length
    tokenizer = load_tokenizer(base, args.cache)
    pad = int(tokenizer.pad_token_id)
    with tempfile.TemporaryDirectory(prefix="meetara-bench-qlora-") as tmp:
        work = Path(tmp)
        train = _encode_file(tokenizer, _write(work / "train.jsonl", "general_health", 0, args.samples), seq)
        held_out = _encode_file(tokenizer, _write(work / "eval.jsonl", "general_health", 100_000, 32), seq)
        rows = pack_rows([len(s) for s in train], seq)

        def loss_of(model: Any) -> float:
            value = _evaluate(model, held_out, plan, pad, None)
            assert value is not None
            return value

        full = load_base_model(base, args.cache, dtype=torch.float32)
        quantized = load_base_model(base, args.cache, dtype=torch.float32, four_bit=True)
        memory = {"full": full.get_memory_footprint() / 2**20, "nf4": quantized.get_memory_footprint() / 2**20}
        del quantized
        # The base alone, behind an adapter whose B is zero (peft's initialisation), so one evaluation
        # path serves every model.
        base_loss = loss_of(get_peft_model(full, LoraConfig(r=1, target_modules=["q_proj"])))
        lora, lora_s = _train(base, args.cache, False, train, rows, args, pad, seq)
        qlora, qlora_s = _train(base, args.cache, True, train, rows, args, pad, seq)
        losses = {"base": base_loss, "lora": loss_of(lora), "qlora on nf4": loss_of(qlora)}
        write_adapter(qlora, work / "qlora.safetensors", base_model=base.name)
        full = load_base_model(base, args.cache, dtype=torch.float32)
        losses["qlora on full"] = loss_of(apply_adapter(full, read_adapter(work / "qlora.safetensors")))

    print(
        f"base {base.name}: weights {memory['full']:.0f} MiB fp32, {memory['nf4']:.0f} MiB nf4 "
        f"({memory['nf4'] / memory['full']:.2f}x)"
    )
    print(
        f"{args.steps} steps of {args.batch} rows x {seq} tokens (CPU): "
        f"LoRA {lora_s:.2f} s/step, QLoRA {qlora_s:.2f} s/step"
    )
    for label, loss in losses.items():
        print(f"  held-out loss {label:14s} {loss:.4f}  perplexity {math.exp(loss):8.3f}")
    gain = losses["base"] - losses["qlora on nf4"]
    kept = (losses["base"] - losses["qlora on full"]) / gain if gain > 0 else float("nan")
    print(
        f"merging the QLoRA adapter into the full-precision base keeps {kept:.1%} of its loss improvement; "
        f"perplexity {math.exp(losses['qlora on full']) / math.exp(losses['lora']):.3f}x LoRA's"
    )


if __name__ == "__main__":
    main()
