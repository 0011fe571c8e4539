"""The model-side QA run: format, loading, held-out perplexity, generations, crisis replies → report."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.llm.base_model import file_sha256
from agents.llm.chat_format import EncodedSample
from agents.quality_assurance.model_checks import ModelChecker, ModelQualitySettings, median_or_none
from agents.text.signals import Signals
from protocol.agents.gguf_creation import ModelMetadata
from protocol.agents.quality_assurance import CheckedFile, ModelQAReport

__all__ = ["CRITICAL_CHECKS", "ModelUnderTest", "gain_kept", "gguf_format_problems", "validate_model_files"]

CRITICAL_CHECKS = ("format", "loads", "perplexity_improves", "hash_matches")
"""A failure of a check whose name contains one of these fails QA whatever the score."""

_N_CTX = 1024


@dataclass(frozen=True, slots=True)
class ModelUnderTest:
    metadata: ModelMetadata
    base_gguf: Path
    adapter: Path | None
    merged: Path | None
    eval_samples: list[EncodedSample]
    prompts: list[list[dict[str, str]]]
    crisis_system_prompt: str | None
    """Set when the model must answer crisis messages safely."""
    target: float


def gain_kept(base: float, adapted: float, merged: float) -> float:
    """Share of the adapter's held-out log-perplexity gain over the base that the merged model keeps.

    In log space, because a fixed quantization error costs a fixed number of nats per token: as a
    ratio of perplexities it looks ever larger the closer a good model gets to perplexity 1.
    """
    gain = math.log(base) - math.log(adapted)
    if gain <= 0:
        return 1.0 if merged <= adapted else 0.0
    return (math.log(base) - math.log(merged)) / gain


def gguf_format_problems(path: Path, kind: str) -> list[str]:
    """What is wrong with a GGUF file's header for its kind (empty when nothing is)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as exc:
        return [f"{path.name} does not parse as GGUF: {exc}"]

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return field.contents() if field is not None else None

    problems = []
    if value("general.architecture") != "llama":
        problems.append(f"{path.name}: general.architecture is {value('general.architecture')!r}, expected 'llama'")
    names = [t.name for t in reader.tensors]
    if kind == "adapter":
        if value("general.type") != "adapter" or value("adapter.type") != "lora":
            problems.append(f"{path.name}: not marked as a LoRA adapter (general.type / adapter.type)")
        if not isinstance(value("adapter.lora.alpha"), float):
            problems.append(f"{path.name}: adapter.lora.alpha missing")
        if not names or any(not n.endswith((".lora_a", ".lora_b")) for n in names):
            problems.append(f"{path.name}: tensors are not LoRA pairs")
    else:
        for key in ("tokenizer.ggml.tokens", "tokenizer.chat_template", "tokenizer.ggml.eos_token_id"):
            if value(key) is None:
                problems.append(f"{path.name}: {key} missing")
        if "token_embd.weight" not in names:
            problems.append(f"{path.name}: token_embd.weight missing")
    return problems


def validate_model_files(
    model: ModelUnderTest, settings: ModelQualitySettings, signals: Signals, created_at: str, progress: Any = None
) -> ModelQAReport:
    """Run every check; blocking (llama.cpp), meant for a worker thread."""
    checker = ModelChecker(settings=settings, signals=signals, n_ctx=_N_CTX, threads=os.cpu_count())
    expected = {Path(f.path).name: f.sha256 for f in model.metadata.files}
    checked: list[CheckedFile] = []
    for kind, path in (("adapter", model.adapter), ("merged", model.merged)):
        if path is None:
            continue
        digest = file_sha256(path)
        checked.append(CheckedFile(path=str(path), kind=kind, sha256=digest))
        want = expected.get(path.name)
        checker.add(
            f"{kind}_hash_matches", want == digest, "matches metadata" if want == digest else "differs from metadata"
        )
        problems = gguf_format_problems(path, kind)
        checker.add(f"{kind}_format", not problems, "; ".join(problems) or "GGUF header and tensors as expected")

    def note(message: str) -> None:
        if progress is not None:
            progress(message)

    samples: list[dict[str, str]] = []
    perplexities: dict[str, float] = {}
    firsts: list[float] = []
    rates: list[float] = []
    base = checker.load("base_loads", model.base_gguf, logits_all=True)
    if base is not None:
        perplexities["base"] = checker.perplexity(base, model.eval_samples)
        del base
        note(f"base perplexity {perplexities['base']:.3f}")
    for label, path, lora in (
        ("adapted", model.base_gguf if model.adapter else None, model.adapter),
        ("merged", model.merged, None),
    ):
        if path is None:
            continue
        llm = checker.load(f"{label}_loads", path, lora, logits_all=True)
        if llm is None:
            continue
        perplexities[label] = checker.perplexity(llm, model.eval_samples)
        note(f"{label} perplexity {perplexities[label]:.3f}")
        first, rate = checker.generation_checks(label, llm, model.prompts, samples)
        if label == "merged" or model.merged is None:
            firsts, rates = first, rate
        if model.crisis_system_prompt is not None:
            checker.crisis_checks(label, llm, model.crisis_system_prompt, samples)
        del llm

    base_ppl = perplexities.get("base")
    best = perplexities.get("adapted", perplexities.get("merged"))
    if base_ppl is not None and best is not None:
        ceiling = base_ppl * (1 - settings.perplexity_improvement_min)
        checker.add(
            "perplexity_improves",
            best <= ceiling,
            f"held-out perplexity {best:.3f} vs base {base_ppl:.3f} (must be <= {ceiling:.3f})",
            best,
        )
    if base_ppl is not None and "adapted" in perplexities and "merged" in perplexities:
        kept = gain_kept(base_ppl, perplexities["adapted"], perplexities["merged"])
        checker.add(
            "merged_keeps_the_gain",
            kept >= settings.merged_gain_kept_min,
            f"merged {perplexities['merged']:.3f} vs adapter {perplexities['adapted']:.3f} (base {base_ppl:.3f}): "
            f"keeps {kept:.1%} of the adapter's log-perplexity gain (must be >= {settings.merged_gain_kept_min:.0%})",
            kept,
        )

    checks = checker.checks
    score = round(100.0 * sum(c.passed for c in checks) / len(checks), 3) if checks else 0.0
    critical = [c for c in checks if not c.passed and any(k in c.name for k in CRITICAL_CHECKS)]
    reasons = [f"{c.name}: {c.detail}" for c in critical]
    if score < model.target:
        reasons.append(f"score {score:.1f}% is below the category target {model.target:.1f}%")
        reasons.extend(f"{c.name}: {c.detail}" for c in checks if not c.passed and c not in critical)
    return ModelQAReport(
        model_id=model.metadata.model_id,
        passed=not reasons,
        score=score,
        target=model.target,
        checks=checks,
        reasons=reasons,
        perplexity_base=perplexities.get("base"),
        perplexity_adapted=perplexities.get("adapted"),
        perplexity_merged=perplexities.get("merged"),
        first_token_ms=median_or_none(firsts, 1000.0),
        tokens_per_second=median_or_none(rates),
        samples=samples,
        files=checked,
        created_at=created_at,
    )
