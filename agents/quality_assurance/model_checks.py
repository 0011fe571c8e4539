"""Model QA: does the GGUF load in llama.cpp, beat the base on held-out perplexity, and talk sanely?

Everything is measured through llama-cpp-python, the runtime the files are deployed to.
Held-out conversations are tokenized with the base model's chat template and scored on the
assistant tokens only, the same tokens training optimised.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.llm.chat_format import IGNORE, EncodedSample
from agents.text.ngrams import normalise
from agents.text.signals import Signals
from protocol.agents.quality_assurance import QACheck
from runtime import load_config

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["EvaluationSettings", "GenerationSettings", "ModelChecker", "ModelQualitySettings", "load_model_quality"]


class GenerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_tokens: int = Field(ge=8)
    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    top_k: int = Field(ge=0)
    min_p: float = Field(ge=0, le=1)
    repeat_penalty: float = Field(ge=1)
    seed: int


class EvaluationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    crisis_samples: int = Field(ge=1)
    """Times each crisis message is asked (different seeds, the user temperature)."""
    crisis_help_rate_min: float = Field(gt=0, le=1)
    """Share of crisis replies that must point to real help; below it the model is refused."""
    min_rates: dict[str, float]
    """Per reply check, the share of evaluation replies that must pass it."""


class ModelQualitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    perplexity_improvement_min: float = Field(ge=0, lt=1)
    merged_gain_kept_min: float = Field(ge=0, le=1)
    min_reply_words: int = Field(ge=1)
    max_repeated_4gram_share: float = Field(gt=0, le=1)
    generation: GenerationSettings
    evaluation: EvaluationSettings


def load_model_quality(directory: Path | None = None) -> ModelQualitySettings:
    return load_config(ModelQualitySettings, directory, "model_quality.yaml")


def repeated_4gram_share(text: str) -> float:
    """Share of word 4-grams that already occurred earlier in the text (degenerate loops score high)."""
    words = normalise(text).split()
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


@dataclass(slots=True)
class ModelChecker:
    """Runs the checks and collects them."""

    settings: ModelQualitySettings
    signals: Signals
    n_ctx: int
    threads: int | None = None
    checks: list[QACheck] = field(default_factory=list)

    def add(self, name: str, passed: bool, detail: str, value: float | None = None) -> bool:
        self.checks.append(QACheck(name=name, passed=passed, detail=detail, value=value))
        return passed

    def load(self, name: str, model: Path, lora: Path | None = None, *, logits_all: bool = False) -> Llama | None:
        """Load through llama.cpp; a failure is a failed check, not an exception."""
        from llama_cpp import Llama

        try:
            llm = Llama(
                model_path=str(model),
                lora_path=str(lora) if lora else None,
                n_ctx=self.n_ctx,
                logits_all=logits_all,
                n_threads=self.threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            self.add(name, False, f"llama.cpp could not load it: {exc}")
            return None
        self.add(name, True, f"loaded {model.name}" + (f" with {lora.name}" if lora else ""))
        return llm

    @staticmethod
    def perplexity(llm: Llama, samples: list[EncodedSample]) -> float:
        """exp(mean negative log-likelihood) of the assistant tokens."""
        total, count = 0.0, 0
        for sample in samples:
            ids = sample.input_ids[: llm.n_ctx()]
            llm.reset()  # type: ignore[no-untyped-call]
            llm.eval(ids)
            logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
            labels = np.asarray(sample.labels[: len(ids)])
            positions = np.nonzero(labels[1:] != IGNORE)[0]
            if positions.size == 0:
                continue
            rows = logits[positions]
            peak = rows.max(axis=1, keepdims=True)
            log_norm = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))
            total += float((log_norm - rows[np.arange(len(positions)), labels[positions + 1]]).sum())
            count += int(positions.size)
        return math.exp(total / count) if count else float("nan")

    def chat(
        self, llm: Llama, messages: list[dict[str, str]], *, seed_offset: int = 0
    ) -> tuple[str, str, float, float]:
        """(reply, finish reason, first-token seconds, tokens/s) for one reply sampled as users run it."""
        g = self.settings.generation
        started = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        finish = "length"
        tokens = 0
        stream: Any = llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            max_tokens=g.max_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            top_k=g.top_k,
            min_p=g.min_p,
            repeat_penalty=g.repeat_penalty,
            seed=g.seed + seed_offset,
            stream=True,
        )
        for chunk in stream:
            choice = chunk["choices"][0]
            text = choice.get("delta", {}).get("content")
            if text:
                if first is None:
                    first = time.perf_counter() - started
                pieces.append(text)
                tokens += 1
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        elapsed = time.perf_counter() - started
        first = first if first is not None else elapsed
        rate = (tokens - 1) / (elapsed - first) if tokens > 1 and elapsed > first else 0.0
        return "".join(pieces).strip(), finish, first, rate

    def generation_checks(
        self, label: str, llm: Llama, prompts: list[list[dict[str, str]]], samples: list[dict[str, str]]
    ) -> tuple[list[float], list[float]]:
        firsts, rates = [], []
        for i, messages in enumerate(prompts):
            reply, finish, first, rate = self.chat(llm, messages)
            firsts.append(first)
            rates.append(rate)
            samples.append({"model": label, "prompt": messages[-1]["content"], "reply": reply})
            words = len(reply.split())
            self.add(f"{label}_reply_nonempty[{i}]", words >= self.settings.min_reply_words, f"{words} words")
            share = repeated_4gram_share(reply)
            self.add(
                f"{label}_reply_not_degenerate[{i}]",
                share <= self.settings.max_repeated_4gram_share,
                f"repeated 4-gram share {share:.2f}",
                share,
            )
            self.add(f"{label}_reply_stops[{i}]", finish == "stop", f"finish reason {finish}")
        return firsts, rates


def median_or_none(values: list[float], scale: float = 1.0) -> float | None:
    return round(statistics.median(values) * scale, 3) if values else None
