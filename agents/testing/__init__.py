"""Test and benchmark support for whole jobs: a tiny llama (random weights, SmolLM2's tokenizer)
written as GGUF so model tests run in seconds, and catalogue overrides sized for it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.gguf_creation.model_gguf import tokenizer_metadata_from_gguf, write_model_gguf
from agents.llm.default_base import default_base_gguf

if TYPE_CHECKING:
    from transformers import LlamaConfig

__all__ = ["build_tiny_gguf", "tiny_catalog", "tiny_config", "tiny_job_env"]


def tiny_config() -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def build_tiny_gguf(path: Path, *, seed: int = 0) -> Path:
    """Write a 2-layer, 64-wide llama with random weights as an F32 GGUF at ``path``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config())
    # Larger-than-default weights so the random model's predictions are peaked, not uniform:
    # agreement tests then compare meaningful top-1 tokens.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.08 if "embed" not in name else 0.5)
    write_model_gguf(
        model.state_dict(),
        model.config,
        tokenizer_metadata_from_gguf(default_base_gguf()),
        path,
        name="tiny-llama",
        dtype="F32",
    )
    return path


SMALL_CATEGORY = ("specialized", ["legal", "financial"])
"""The tiny catalogue's specialized category has two domains, so a category job stays small."""


def tiny_catalog(
    folder: Path,
    *,
    local_usd_per_hour: float = 0.0,
    healthcare_target: float = 1.0,
    step_timeouts: dict[str, float] | None = None,
    agent_wait_s: dict[str, float] | None = None,
    cpu_max_steps: int | None = None,
    reply_tokens: int | None = None,
    eval_items: int = 4,
    crisis_per_kind: int = 0,
) -> Path:
    """Config overrides for whole jobs on the tiny model.

    A random 2-layer model cannot chat, so the pass marks of healthcare and of the small category
    drop to the critical checks (format, loading, hashes, perplexity); retries back off quickly.
    The evaluation sets keep their first ``eval_items`` ordinary messages and ``crisis_per_kind``
    crisis messages of each kind: a random model cannot pass the crisis gate, and asking it 63
    crisis prompts only costs time (the gate itself is tested with scripted replies).
    """
    import importlib.resources

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    configs = importlib.resources.files("configs")
    domains = yaml.safe_load(configs.joinpath("domains.yaml").read_text())
    domains["categories"]["healthcare"]["quality_target"] = healthcare_target
    small, kept = SMALL_CATEGORY
    category = domains["categories"][small]
    category["quality_target"] = 1.0
    category["domains"] = {name: category["domains"][name] for name in kept}
    (folder / "domains.yaml").write_text(yaml.safe_dump(domains))
    providers = yaml.safe_load(configs.joinpath("providers.yaml").read_text())
    providers["local"]["usd_per_hour"] = local_usd_per_hour
    (folder / "providers.yaml").write_text(yaml.safe_dump(providers))
    jobs = yaml.safe_load(configs.joinpath("jobs.yaml").read_text())
    jobs["backoff_s"] = 0.2
    jobs["budget_check_s"] = 0.5
    jobs["step_timeout_s"].update(step_timeouts or {})
    jobs["agent_wait_s"].update(agent_wait_s or {})
    if cpu_max_steps is not None:
        jobs["cpu_default"]["max_steps"] = cpu_max_steps
    (folder / "jobs.yaml").write_text(yaml.safe_dump(jobs))
    (folder / "eval").mkdir(exist_ok=True)
    for category in (small, "healthcare"):
        evaluation = yaml.safe_load(configs.joinpath("eval", f"{category}.yaml").read_text())
        crisis: dict[str, list[dict[str, Any]]] = {}
        for item in evaluation["items"]:
            if item["kind"] == "crisis":
                crisis.setdefault(item["crisis_kind"], []).append(item)
        ordinary = [i for i in evaluation["items"] if i["kind"] != "crisis"][:eval_items]
        evaluation["items"] = ordinary + [i for items in crisis.values() for i in items[:crisis_per_kind]]
        (folder / "eval" / f"{category}.yaml").write_text(yaml.safe_dump(evaluation))
    if reply_tokens is not None:  # a random model never ends its reply: QA's generations run to the limit
        quality = yaml.safe_load(configs.joinpath("model_quality.yaml").read_text())
        quality["generation"]["max_tokens"] = reply_tokens
        (folder / "model_quality.yaml").write_text(yaml.safe_dump(quality))
    return folder


def tiny_job_env(base: dict[str, str], folder: Path, model_cache: Path, **catalog: Any) -> dict[str, str]:
    """Environment of ``meetara`` processes running whole jobs on the tiny model in ``folder``."""
    return {
        **base,
        "MEETARA_CATALOG_DIR": str(tiny_catalog(folder / "catalog", **catalog)),
        "MEETARA_DATA_DIR": str(folder / "data"),
        "MEETARA_MODELS_DIR": str(folder / "models"),
        "MEETARA_MODEL_CACHE_DIR": str(model_cache),
        "MEETARA_REQUEST_TIMEOUT_S": "120",
    }
