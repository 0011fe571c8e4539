"""Measure one LoRA training step's peak memory on CPU, in a fresh process (run as a module).

Prints JSON: the RSS growth from building the LoRA model, and the transient peak of a forward and
backward pass (VmHWM after resetting it, minus VmRSS before). glibc's mmap threshold is fixed by
the caller (MALLOC_MMAP_THRESHOLD_) so every large tensor is mapped and unmapped: RSS then follows
the live tensors instead of a heap that keeps freed memory.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    config = AutoConfig.for_model(spec["model_type"], **spec["config"])
    # A throwaway model of one narrow layer first: transformers and peft import their modules
    # lazily, and that code should not count as the model's memory.
    warm = AutoConfig.for_model(spec["model_type"], **{**spec["config"], "num_hidden_layers": 1, "vocab_size": 64})
    get_peft_model(AutoModelForCausalLM.from_config(warm), LoraConfig(target_modules="all-linear"))  # type: ignore[no-untyped-call]
    gc.collect()
    before = _kb("VmRSS:")
    base = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model = get_peft_model(base, LoraConfig(r=spec["lora_r"], lora_alpha=16, target_modules="all-linear"))
    built = _kb("VmRSS:")
    ids = torch.randint(0, config.vocab_size, (spec["micro_batch"], spec["sequence_length"]))
    positions = torch.arange(spec["sequence_length"]).repeat(spec["micro_batch"], 1)

    def step() -> None:  # the trainer's loss path: decoder, output head on the predicted positions, fp32 loss
        inner = model.get_base_model()
        hidden = inner.model(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
        logits = inner.lm_head(hidden[:, :-1].reshape(-1, hidden.shape[-1]))
        torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:].reshape(-1)).backward()

    step()  # gradients allocated, lazy initialisation done
    gc.collect()
    resting = _kb("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    step()
    peak = _kb("VmHWM:")
    print(json.dumps({"model_gb": (built - before) / 2**20, "transient_gb": (peak - resting) / 2**20}))


if __name__ == "__main__":
    main()
