"""How often a trained adapter opens its reply as a crisis reply, on held-out messages it never saw.

    python -m bench.crisis_openings ADAPTER [ADAPTER ...] [--train-data TRAIN.jsonl] [--cache DIR]

Run from the repository root; ADAPTER is a job's ``data/models/trained/<category>/<domain>/adapter.safetensors``
and ``--cache`` its ``data/cache/base_models`` (the converted base model, else it is converted again).

A crisis reply starts with one fixed sentence (``crisis_replies.opening`` in the material), so a
model has decided whether a message is a crisis by the end of its reply's first words. For each
held-out message of the crisis detector's sets (``crisis_heldout.yaml`` and
``crisis_heldout_v6.yaml``: never in any training data) this reads the probability that a reply
sampled as model QA samples it (temperature and top-p of ``configs/model_quality.yaml``) begins
with that sentence's first ``OPENING_LENGTH`` tokens (the first token alone misleads: "Please"
also opens ordinary replies): per crisis kind (the share QA's crisis gate will see), on the
sets' non-crises (false alarms on messages that sound alarming) and on the domain category's
evaluation questions and emotional messages (``configs/eval``: the false alarms QA's calm check
counts). One forward pass per message, so minutes instead of model QA's generations; the base
model without an adapter is the baseline, measured in the same run.

The system prompt is the training data's most frequent one (``--train-data``, as model QA asks),
else the domain's first.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml

from agents.data_generation import load_common, load_material
from agents.gpu_optimization.decisions import OPENING_LENGTH
from agents.llm.adapter_file import apply_adapter, read_adapter
from agents.llm.base_model import load_base_model, load_tokenizer, resolve_base_model
from agents.quality_assurance.eval_sets import load_eval_set
from agents.quality_assurance.model_checks import load_model_quality
from agents.text.crisis_measure import HeldoutSet
from runtime import load_catalog

_HELDOUT = ("crisis_heldout.yaml", "crisis_heldout_v6.yaml")


def _measured_sets(category: str) -> dict[str, list[str]]:
    """Messages per crisis kind, then ``none``: the non-crises, over both held-out files, then
    ``ordinary``: the category's evaluation questions and emotional messages."""
    sets: dict[str, list[str]] = {}
    for name in _HELDOUT:
        path = Path(str(importlib.resources.files("configs").joinpath("safety", name)))
        heldout = HeldoutSet.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        for text, kind, _indirect in heldout.crises():
            sets.setdefault(kind, []).append(text)
        sets.setdefault("none", []).extend(heldout.non_crises())
    evaluation = load_eval_set(category).items
    sets["ordinary"] = [item.text for item in evaluation if item.kind in ("question", "emotional")]
    return sets


def _system_prompt(train_data: Path | None, domain: str) -> str:
    if train_data is not None:
        prompts: Counter[str] = Counter()
        with open(train_data, encoding="utf-8") as f:
            for line in f:
                prompts[json.loads(line)["messages"][0]["content"]] += 1
        return prompts.most_common(1)[0][0]
    d = load_catalog().domain(domain)
    return load_common().system_prompts[0].format(role=load_material(d.category, d.name).role)


class _Opening:
    """P(a sampled reply opens with the crisis opening's first tokens) under QA's sampling."""

    def __init__(self, model: Any, tokenizer: Any, system: str, temperature: float, top_p: float) -> None:
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.temperature, self.top_p = temperature, top_p
        opening = load_common().crisis_replies.opening
        prompt = self._ids("x")
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": opening},
        ]
        whole = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False).input_ids
        self.opening = whole[len(prompt[0]) : len(prompt[0]) + OPENING_LENGTH]

    def _ids(self, text: str) -> Any:
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": text}]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(rendered, add_special_tokens=False, return_tensors="pt").input_ids

    def probability(self, text: str) -> float:
        prompt = self._ids(text)
        ids = torch.cat([prompt, torch.tensor([self.opening])], 1)
        with torch.no_grad():
            logits = self.model(ids).logits[0, prompt.shape[1] - 1 : -1].float()
        p = 1.0
        for step, token in enumerate(self.opening):
            probs = torch.softmax(logits[step] / self.temperature, -1)
            ranked, order = probs.sort(descending=True)
            kept = ranked * ((ranked.cumsum(0) - ranked) < self.top_p)  # nucleus: the smallest set reaching top_p
            at = (order == token).nonzero()
            p *= float(kept[at[0, 0]] / kept.sum()) if len(at) else 0.0
        return p


def _measure(opening: _Opening, sets: dict[str, list[str]]) -> dict[str, float]:
    return {label: round(statistics.mean(opening.probability(t) for t in texts), 4) for label, texts in sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapters", nargs="+", type=Path, help="adapter.safetensors files (the train step's output)")
    parser.add_argument("--train-data", type=Path, help="the job's training JSONL (for its system prompt)")
    parser.add_argument("--domain", default="general_health")
    parser.add_argument("--cache", type=Path, default=Path("data/cache/base_models"), help="base model cache folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    generation = load_model_quality().generation
    base = resolve_base_model(None)
    tokenizer = load_tokenizer(base, args.cache)
    system = _system_prompt(args.train_data, args.domain)
    sets = _measured_sets(load_catalog().domain(args.domain).category)
    results: dict[str, dict[str, float]] = {}
    for adapter in [None, *args.adapters]:
        model = load_base_model(base, args.cache, dtype=torch.float32)
        if adapter is not None:
            model = apply_adapter(model, read_adapter(adapter))
        model.eval()
        opening = _Opening(model, tokenizer, system, generation.temperature, generation.top_p)
        results[str(adapter or "base")] = _measure(opening, sets)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    labels = list(sets)
    print(f"{'P(crisis opening)':<40}" + "".join(f"{label[:9]:>10}" for label in labels))
    for name, row in results.items():
        print(f"{name[-40:]:<40}" + "".join(f"{row[label]:>10.3f}" for label in labels))
    counts = ", ".join(f"{label} {len(texts)}" for label, texts in sets.items())
    print(f"messages: {counts}; 'none': held-out non-crises, 'ordinary': the evaluation set's ordinary messages")


if __name__ == "__main__":
    main()
