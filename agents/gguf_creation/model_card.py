"""A deployed version's ``README.md``: what the model is, how it was made, what QA measured, how to run it.

Everything in the card comes from the version's metadata and QA report (no figure is written here
that was not measured), so a card can be rebuilt from a deployed folder at any time.
"""

from __future__ import annotations

from pathlib import Path

from protocol.agents.gguf_creation import GgufFile, ModelMetadata
from protocol.agents.quality_assurance import ModelQAReport

__all__ = ["model_card"]


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _files(files: list[GgufFile]) -> list[str]:
    rows = [[f"`{Path(f.path).name}`", f.kind, f.quantization, _mib(f.size), f"`{f.sha256}`"] for f in files]
    return _table(["file", "kind", "type", "size", "sha256"], rows)


def _run(metadata: ModelMetadata, files: list[GgufFile], modelfiles: dict[str, str | None]) -> list[str]:
    merged = next((Path(f.path).name for f in files if f.kind == "merged"), None)
    adapter = next((Path(f.path).name for f in files if f.kind == "adapter"), None)
    lines = ["## Run it", ""]
    if merged:
        lines += [
            "With llama.cpp (the file's chat template sends the trained system prompt when you send none):",
            "",
            "```",
            f"llama-cli -m {merged} -cnv",
            "```",
            "",
        ]
    if adapter:
        lines += [
            "The LoRA adapter on its base model (send the system prompt below yourself):",
            "",
            "```",
            f"llama-cli -m {metadata.base_model_path} --lora {adapter} -cnv",
            "```",
            "",
        ]
    for name, problem in modelfiles.items():
        if problem is None:
            lines += ["With Ollama:", "", "```", f"ollama create {metadata.model_id} -f {name}", "```", ""]
        else:
            lines += [f"No `{name}` was written: {problem}.", ""]
    if any(problem is None and name != "Modelfile" for name, problem in modelfiles.items()):
        lines += [
            f"The adapter's Modelfile names the base model by its path where it was built "
            f"(`{metadata.base_model_path}`); on another machine, point `FROM` at your copy of that GGUF "
            f"(sha256 in the metadata).",
            "",
        ]
    return lines


def _training(metadata: ModelMetadata) -> list[str]:
    lines = ["## Training", ""]
    stats = metadata.data_stats
    if stats:
        crisis = stats.get("crisis")
        lines.append(
            f"- Data: {stats.get('samples', '?')} conversations"
            + (f", {crisis} of them crisis conversations" if crisis is not None else "")
            + (f", {stats['multi_turn']} with two exchanges" if "multi_turn" in stats else "")
        )
    lora = metadata.lora
    lines.append(f"- LoRA: rank {lora.get('r')}, alpha {lora.get('alpha')}, modules {lora.get('target_modules')}")
    t = metadata.training
    if t is not None:
        lines.append(f"- {t.steps} optimizer steps over {t.tokens:,} tokens ({t.trained_tokens:,} carried the loss)")
        if t.eval_loss_base is not None and t.eval_loss is not None:
            lines.append(f"- Held-out loss {t.eval_loss_base:.3f} (base) → {t.eval_loss:.3f} (trained)")
    return [*lines, ""]


def _qa(report: ModelQAReport) -> list[str]:
    verdict = "passed" if report.passed else "did not pass"
    lines = ["## Quality assurance", ""]
    lines.append(f"QA {verdict}: score {report.score:.1f}% against a target of {report.target:.0f}%.")
    ppl = {"base": report.perplexity_base, "adapter": report.perplexity_adapted, "merged": report.perplexity_merged}
    measured = [f"{k} {v:.2f}" for k, v in ppl.items() if v is not None]
    if measured:
        lines.append(f"Held-out perplexity: {', '.join(measured)}.")
    if report.sampling:
        lines.append("Replies were sampled at " + ", ".join(f"{k} {v:g}" for k, v in report.sampling.items()) + ".")
    lines.append("")
    e = report.evaluation
    if e is not None:
        lines.append(
            f"On the hand-written `{e.category}` evaluation set (version {e.version}, text the factory did not "
            f"write; {len(e.replies)} replies, each with its verdicts, in the QA report):"
        )
        lines.append("")
        lines += _table(["check", "share passed"], [[k, f"{v:.1%}"] for k, v in sorted(e.rates.items())])
        lines.append("")
    failed = [c for c in report.checks if not c.passed]
    if failed:
        lines += ["Checks that failed:", ""] + [f"- `{c.name}`: {c.detail}" for c in failed] + [""]
    return lines


def _limits(report: ModelQAReport) -> list[str]:
    lines = [
        "## Intended use and limits",
        "",
        "A small domain assistant for everyday questions in its domain. It is not a professional: it "
        "does not diagnose, prescribe or give legal or financial decisions, and it can be wrong.",
        "",
        "**Crisis safety.**",
    ]
    e = report.evaluation
    if e is not None and e.crisis_help_by_kind:
        rows = [[kind, f"{rate:.1%}"] for kind, rate in sorted(e.crisis_help_by_kind.items())]
        lines += [
            " Share of replies to unseen crisis messages that pointed to real help (an emergency number, "
            "a crisis line, urgent care), per kind:",
            "",
            *_table(["crisis kind", "real help"], rows),
            "",
        ]
    else:
        lines.append(" This model's QA asked it no crisis messages: its category is not crisis-sensitive.")
        lines.append("")
    lines.append(
        "Whatever these figures, a model of this size can miss a crisis. An application that may meet "
        "people in danger should check each message with a crisis detector and show real help itself, "
        "before and regardless of the model's reply."
    )
    return [*lines, ""]


def model_card(
    metadata: ModelMetadata, report: ModelQAReport, files: list[GgufFile], modelfiles: dict[str, str | None]
) -> str:
    """The card's markdown; ``modelfiles``: each Modelfile's name, with why it was not written (None: written)."""
    title = f"# {metadata.model_id} {metadata.version or ''}".rstrip()
    lines = [title, "", metadata.description, ""]
    scope = metadata.domain or metadata.category or metadata.scope
    lines += [
        f"- Scope: {metadata.scope} ({scope}); trained on the domains: {', '.join(metadata.domains)}",
        f"- Base model: {metadata.base_model}"
        + (f" (sha256 `{metadata.base_sha256}`)" if metadata.base_sha256 else ""),
        f"- Made by {metadata.tool} on {metadata.created_at}",
        "",
        "## Files",
        "",
        *_files(files),
        "",
    ]
    if metadata.system_prompt:
        lines += ["## System prompt", "", "Trained under this system prompt; send it (or let the template do so):", ""]
        lines += ["```", metadata.system_prompt, "```", ""]
    lines += _run(metadata, files, modelfiles)
    lines += _training(metadata)
    lines += _qa(report)
    lines += _limits(report)
    return "\n".join(lines)
