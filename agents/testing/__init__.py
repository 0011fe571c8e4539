"""Test and benchmark support for whole jobs: tiny models of every supported architecture (random
weights, SmolLM2's tokenizer), written as GGUF or as a Hugging Face folder so model tests run in
seconds, and catalogue overrides sized for them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.llm.default_base import default_base_gguf
from agents.llm.model_gguf import tokenizer_metadata_from_gguf, write_model_gguf

if TYPE_CHECKING:
    from transformers import LlamaConfig, PretrainedConfig, PreTrainedModel

__all__ = [
    "TINY_ARCHITECTURES",
    "build_tiny_folder",
    "build_tiny_gguf",
    "tiny_catalog",
    "tiny_config",
    "tiny_job_env",
    "tiny_model",
]


TINY_SHAPE: dict[str, Any] = {
    "vocab_size": 49152,  # SmolLM2's tokenizer
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}

TINY_ARCHITECTURES: dict[str, dict[str, Any]] = {
    # Llama 3.x rope scaling, with an original context short enough that the prompts see every band.
    "llama": {
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    },
    "mistral": {"sliding_window": None},
    "qwen2": {"tie_word_embeddings": True},  # q/k/v biases come with the architecture
    "qwen3": {"head_dim": 32},  # wider than hidden/heads, as Qwen3's own heads are
    "gemma2": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 512},
    "phi3": {"sliding_window": 1023, "original_max_position_embeddings": 1024},
}
"""Per-architecture settings of the tiny models, each exercising what sets its row of the table apart."""


def tiny_config() -> LlamaConfig:
    """The tiny llama of ``build_tiny_gguf``: ``TINY_SHAPE`` with tied embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(**TINY_SHAPE, tie_word_embeddings=True)


def tiny_model(model_type: str, *, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised 2-layer, 64-wide causal LM of ``model_type`` with SmolLM2's vocabulary."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config: PretrainedConfig = AutoConfig.for_model(model_type, **{**TINY_SHAPE, **TINY_ARCHITECTURES[model_type]})
    torch.manual_seed(seed)
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    # Larger-than-default weights (and non-trivial norms and biases) so the random model's
    # predictions are peaked and every tensor matters: agreement tests then compare real top-1s.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.08 if "embed" not in name else 0.5)
            elif name.endswith("norm.weight"):
                param.normal_(0.0 if model_type == "gemma2" else 1.0, 0.2)
            else:
                param.normal_(0.0, 0.1)
    return model


def build_tiny_folder(path: Path, model_type: str, *, seed: int = 0) -> Path:
    """A tiny model saved as a Hugging Face folder (safetensors, config, SmolLM2's tokenizer)."""
    from transformers import AutoTokenizer

    model = tiny_model(model_type, seed=seed)
    model.save_pretrained(path, safe_serialization=True)
    base = default_base_gguf()
    AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name).save_pretrained(path)
    return path


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


TINY_REPLY_TOKENS = 24
"""QA's reply cap for a random model: it never ends a reply, so every generation runs to the cap
(320 tokens as configured, most of a tiny job's QA time on a busy machine)."""

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
    reply_tokens: int | None = TINY_REPLY_TOKENS,
    eval_items: int = 4,
    crisis_per_kind: int = 0,
) -> Path:
    """Config overrides for whole jobs on the tiny model.

    A random 2-layer model cannot chat, so the pass marks of healthcare and of the small category
    drop to the critical checks (format, loading, hashes, perplexity); retries back off quickly.
    The evaluation sets keep their first ``eval_items`` ordinary messages and ``crisis_per_kind``
    crisis messages of each kind: a random model cannot pass the crisis gate, and asking it 63
    crisis prompts only costs time (the gate itself is tested with scripted replies).
    ``reply_tokens`` caps QA's generations (``None``: the configured cap, for a base that can chat).
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
    if reply_tokens is not None:
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
