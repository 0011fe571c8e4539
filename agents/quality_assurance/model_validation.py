"""The model-side QA run: format, loading, held-out perplexity, generations, crisis replies → report."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.llm.architectures import ARCHITECTURES
from agents.llm.base_model import file_sha256
from agents.llm.chat_format import EncodedSample
from agents.llm.chat_template import render_chat
from agents.quality_assurance.eval_sets import EvalSet
from agents.quality_assurance.evaluation import (
    EvalJudges,
    ask_eval_set,
    crisis_failures_allowed,
    crisis_rates,
    reply_rates,
)
from agents.quality_assurance.model_checks import ModelChecker, ModelQualitySettings, median_or_none
from agents.text.signals import Signals
from protocol.agents.gguf_creation import ModelMetadata
from protocol.agents.quality_assurance import CheckedFile, EvalReply, EvaluationReport, ModelQAReport, QACheck

__all__ = [
    "CRITICAL_CHECKS",
    "ModelUnderTest",
    "evaluation_checks",
    "gain_kept",
    "gguf_format_problems",
    "judge_checks",
    "validate_model_files",
]

CRITICAL_CHECKS = ("format", "loads", "perplexity_improves", "hash_matches", "crisis_help_rate", "eval_calm")
"""A failure of a check whose name contains one of these fails QA whatever the score. ``eval_calm``
is the crisis gate's other half: a model that answers everything as an emergency passes every
crisis check, and sends people to 911 over a headache."""

_N_CTX = 1024


@dataclass(frozen=True, slots=True)
class ModelUnderTest:
    metadata: ModelMetadata
    base_gguf: Path
    adapter: Path | None
    merged: Path | None
    eval_samples: list[EncodedSample]
    prompts: list[list[dict[str, str]]]
    system_prompt: str
    """The system prompt the model was trained with: sent with the adapter's messages, and with the
    merged model's when its metadata does not say its template sends it."""
    crisis_sensitive: bool
    """The model must answer crisis messages with real help."""
    target: float
    eval_set: EvalSet | None = None
    """The category's hand-written evaluation set."""
    reference_samples: list[EncodedSample] | None = None
    """The evaluation set's messages with their hand-written reference replies, encoded."""


def gain_kept(base: float, adapted: float, merged: float) -> float:
    """Share of the adapter's held-out log-perplexity gain over the base that the merged model keeps.

    In log space, because a fixed quantization error costs a fixed number of nats per token: as a
    ratio of perplexities it looks ever larger the closer a good model gets to perplexity 1.
    """
    gain = math.log(base) - math.log(adapted)
    if gain <= 0:
        return 1.0 if merged <= adapted else 0.0
    return (math.log(base) - math.log(merged)) / gain


def gguf_format_problems(path: Path, kind: str, *, system_prompt: str | None = None) -> list[str]:
    """What is wrong with a GGUF file's header for its kind (empty when nothing is).

    ``system_prompt``: the one the metadata says a merged model's chat template sends when a
    conversation has none.
    """
    from agents.llm.gguf_fields import read_gguf

    try:
        contents = read_gguf(path)
    except (ValueError, OSError) as exc:
        return [f"{path.name} does not parse as GGUF: {exc}"]
    value = contents.value

    problems = []
    architecture = value("general.architecture")
    known = sorted({arch.gguf_name for arch in ARCHITECTURES.values()})
    if architecture not in known:
        problems.append(f"{path.name}: general.architecture is {architecture!r}, expected one of {known}")
    names = [t.name for t in contents.tensors]
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
        template = value("tokenizer.chat_template")
        if system_prompt is not None and isinstance(template, str):
            problems.extend(_default_system_problems(path, template, system_prompt))
    return problems


def _default_system_problems(path: Path, template: str, system_prompt: str) -> list[str]:
    try:
        prompt = render_chat(template, [{"role": "user", "content": "hello"}])
    except Exception as exc:  # a Jinja error, or the template's own raise_exception (a ValueError)
        return [f"{path.name}: the chat template does not render: {exc}"]
    if system_prompt not in prompt:
        return [f"{path.name}: the chat template does not send the trained system prompt"]
    return []


def _asked(model: ModelUnderTest, settings: ModelQualitySettings) -> str:
    merged = "template" if model.metadata.system_prompt is not None else "explicit"
    crisis = f"{settings.evaluation.crisis_samples}x" if model.crisis_sensitive else "none"
    return f"system: adapted explicit, merged {merged}; crisis messages: {crisis}"


def judge_checks(checks: list[QACheck], target: float) -> tuple[float, list[str]]:
    """(score in percent, why the model fails): any failed critical check, or a score below target."""
    score = round(100.0 * sum(c.passed for c in checks) / len(checks), 3) if checks else 0.0
    critical = [c for c in checks if not c.passed and any(k in c.name for k in CRITICAL_CHECKS)]
    reasons = [f"{c.name}: {c.detail}" for c in critical]
    if score < target:
        reasons.append(f"score {score:.1f}% is below the category target {target:.1f}%")
        reasons.extend(f"{c.name}: {c.detail}" for c in checks if not c.passed and c not in critical)
    return score, reasons


def evaluation_checks(
    checker: ModelChecker,
    replies: list[EvalReply],
    settings: ModelQualitySettings,
    crisis_planned: dict[str, int] | None = None,
) -> None:
    """Rate checks over the evaluation replies: one per model and reply check, and the crisis gate.

    ``crisis_planned``: per model, the crisis asks planned; when fewer were asked (the gate was
    already lost), the detail says so.
    """
    rates = reply_rates(replies)
    for key, rate in rates.items():
        label, check = key.split(".")
        if check == "real_help":
            bar = settings.evaluation.crisis_help_rate_min
            asked = sum(1 for r in replies if r.model == label and r.kind == "crisis")
            planned = (crisis_planned or {}).get(label, asked)
            detail = f"{rate:.1%} of {asked} crisis replies point to real help (must be >= {bar:.0%})"
            if asked < planned:
                allowed = crisis_failures_allowed(planned, bar)
                detail += (
                    f"; stopped after {asked} of {planned} asks: more than the {allowed} failures "
                    "the bar allows had already happened"
                )
            checker.add(f"{label}_crisis_help_rate", rate >= bar, detail, rate)  # stopped early: always below
        elif check in settings.evaluation.min_rates:
            bar = settings.evaluation.min_rates[check]
            detail = f"{rate:.1%} of replies pass (must be >= {bar:.0%})"
            checker.add(f"{label}_eval_{check}", rate >= bar, detail, rate)


def validate_model_files(
    model: ModelUnderTest,
    settings: ModelQualitySettings,
    signals: Signals,
    created_at: str,
    progress: Any = None,
    judges: EvalJudges | None = None,
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
        problems = gguf_format_problems(path, kind, system_prompt=model.metadata.system_prompt)
        checker.add(f"{kind}_format", not problems, "; ".join(problems) or "GGUF header and tensors as expected")

    def note(message: str) -> None:
        if progress is not None:
            progress(message)

    samples: list[dict[str, str]] = []
    perplexities: dict[str, float] = {}
    firsts: list[float] = []
    rates: list[float] = []
    reference_ppl: dict[str, float] = {}
    eval_replies: list[EvalReply] = []
    crisis_planned: dict[str, int] = {}
    base = checker.load("base_loads", model.base_gguf, logits_all=True)
    if base is not None:
        perplexities["base"] = checker.perplexity(base, model.eval_samples)
        if model.reference_samples:
            reference_ppl["base"] = checker.perplexity(base, model.reference_samples)
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
        if model.reference_samples:
            reference_ppl[label] = checker.perplexity(llm, model.reference_samples)
        note(f"{label} perplexity {perplexities[label]:.3f}")
        # Asked as it will be run: the merged file's template sends the trained system prompt itself.
        system = None if label == "merged" and model.metadata.system_prompt is not None else model.system_prompt
        prompts = [[m for m in p if system is not None or m["role"] != "system"] for p in model.prompts]
        first, rate = checker.generation_checks(label, llm, prompts, samples)
        if label == "merged" or model.merged is None:
            firsts, rates = first, rate
        if model.eval_set is not None and judges is not None:
            note(f"{label}: asking the {model.eval_set.category} evaluation set")
            answers = ask_eval_set(
                checker,
                label,
                llm,
                model.eval_set,
                system,
                judges,
                settings.evaluation,
                crisis_sensitive=model.crisis_sensitive,
            )
            eval_replies += answers.replies
            crisis_planned[label] = answers.crisis_planned
        del llm
    evaluation_checks(checker, eval_replies, settings, crisis_planned)

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
    score, reasons = judge_checks(checks, model.target)
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
        sampling={
            "temperature": settings.generation.temperature,
            "top_p": settings.generation.top_p,
            "top_k": settings.generation.top_k,
            "min_p": settings.generation.min_p,
            "repeat_penalty": settings.generation.repeat_penalty,
            "max_tokens": settings.generation.max_tokens,
        },
        evaluation=EvaluationReport(
            category=model.eval_set.category,
            version=model.eval_set.version,
            sha256=model.eval_set.sha256,
            replies=eval_replies,
            rates=reply_rates(eval_replies),
            crisis_help_by_kind=crisis_rates(eval_replies),
            crisis_planned=crisis_planned,
            reference_perplexity={k: round(v, 4) for k, v in reference_ppl.items()},
            asked=_asked(model, settings),
        )
        if model.eval_set is not None and eval_replies
        else None,
        created_at=created_at,
    )
