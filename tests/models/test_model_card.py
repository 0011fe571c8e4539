"""Every deployed version carries a model card and Ollama Modelfiles that match its GGUF."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.gguf_creation.deploy import Deployment, deploy_version
from agents.gguf_creation.ollama import UnsupportedTemplate, chat_markup, markup_of_gguf
from agents.llm.chat_template import render_chat, with_default_system
from agents.llm.gguf_fields import read_gguf
from protocol import ArtifactRef
from protocol.agents.gguf_creation import GgufFile, ModelMetadata
from protocol.agents.quality_assurance import CheckedFile, EvalReply, EvaluationReport, ModelQAReport, QACheck

NOW = "2026-12-07T12:00:00+00:00"
SYSTEM = 'You are MeeTARA, a "caring" health guide.\nNever diagnose.'
CONVERSATION = [
    {"role": "system", "content": "Answer in one line."},
    {"role": "user", "content": "I have had a headache\nfor two days."},
    {"role": "assistant", "content": "I'm sorry. Drink water and rest."},
    {"role": "user", "content": "Should I see someone?"},
]


@dataclass
class Modelfile:
    source: str = ""
    adapter: str | None = None
    template: str | None = None
    system: str | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)


_INSTRUCTION = re.compile(r'(?is)^(FROM|ADAPTER|TEMPLATE|SYSTEM|PARAMETER)\s+("""(.*?)"""|[^\n]*)')


def parse_modelfile(text: str) -> Modelfile:
    """Read as Ollama's parser reads a Modelfile: an instruction per line, ``\"\"\"`` around values
    that span lines, ``#`` comments; a quoted parameter has its quotes stripped and no escapes read."""
    parsed, rest = Modelfile(), text
    while rest := rest.lstrip():
        if rest.startswith("#"):
            rest = rest.partition("\n")[2]
            continue
        match = _INSTRUCTION.match(rest)
        assert match is not None, f"not a Modelfile instruction: {rest.splitlines()[0]!r}"
        name, raw, quoted = match.group(1).upper(), match.group(2), match.group(3)
        value = quoted if quoted is not None else raw.strip()
        if name == "PARAMETER":
            key, _, argument = value.partition(" ")
            parsed.parameters.append((key, argument.strip().removeprefix('"').removesuffix('"')))
        else:
            setattr(parsed, {"FROM": "source"}.get(name, name.lower()), value)
        rest = rest[match.end() :]
    assert parsed.source, "a Modelfile needs a FROM line"
    return parsed


def go_render(template: str, messages: list[dict[str, str]]) -> str:
    """Ollama's Go template over ``.Messages``, for the constructs a MeeTARA Modelfile uses (read
    independently of the code that writes them: a branch per role, ``.Content``, a closing prompt)."""
    whole = re.fullmatch(r"\{\{ range \.Messages \}\}(.*)\{\{ end \}\}\{\{ end \}\}(.*)", template, re.DOTALL)
    assert whole is not None, template
    body, closing = whole.groups()
    branches = dict(re.findall(r'\{\{ (?:else )?if eq \.Role "(\w+)" \}\}(.*?)(?=\{\{ else if|\Z)', body, re.DOTALL))
    assert set(branches) == {"system", "user", "assistant"}, branches
    return "".join(branches[m["role"]].replace("{{ .Content }}", m["content"]) for m in messages) + closing


def _file(path: Path, kind: str, quantization: str) -> GgufFile:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    ref = ArtifactRef(uri=path.as_uri(), sha256=digest, size=len(data))
    return GgufFile(kind=kind, path=str(path), quantization=quantization, size=len(data), sha256=digest, artifact=ref)


def _report(files: list[GgufFile]) -> ModelQAReport:
    crisis = EvalReply(
        item="c1",
        kind="crisis",
        crisis_kind="suicide",
        model="merged",
        prompt="p",
        reply="r",
        checks={"real_help": True},
        detail="",
        passed=True,
    )
    return ModelQAReport(
        model_id="meetara_general_health",
        passed=True,
        score=100.0,
        target=95.0,
        checks=[QACheck(name="perplexity_improves", passed=True, detail="ok")],
        reasons=[],
        perplexity_base=26.2,
        perplexity_adapted=9.0,
        perplexity_merged=9.4,
        first_token_ms=10.0,
        tokens_per_second=50.0,
        samples=[],
        files=[CheckedFile(path=f.path, kind=f.kind, sha256=f.sha256) for f in files],
        evaluation=EvaluationReport(
            category="healthcare",
            version=3,
            sha256="0" * 64,
            replies=[crisis],
            rates={"merged.calm": 1.0},
            crisis_help_by_kind={"suicide": 0.967},
            reference_perplexity={},
        ),
        sampling={"temperature": 0.7, "top_p": 0.9, "min_p": 0.05, "repeat_penalty": 1.1, "max_tokens": 320},
        created_at=NOW,
    )


def deploy_tiny_version(tmp_path: Path, tiny_gguf: Path, system: str = SYSTEM) -> tuple[Path, Deployment]:
    """The tiny GGUF deployed as general_health v1 (a merged model, an adapter, a passed QA report)."""
    built = tmp_path / "built"
    built.mkdir()
    merged = shutil.copyfile(tiny_gguf, built / "meetara_general_health_Q4_K_M.gguf")
    (built / "meetara_general_health_lora_f16.gguf").write_bytes(b"adapter")
    files = [
        _file(built / "meetara_general_health_lora_f16.gguf", "adapter", "F16"),
        _file(merged, "merged", "Q4_K_M"),
    ]
    metadata = ModelMetadata(
        model_id="meetara_general_health",
        scope="domain",
        domain="general_health",
        category="healthcare",
        domains=["general_health"],
        description="Everyday health questions.",
        version=None,
        base_model="SmolLM2-135M-Instruct",
        base_model_path=str(tiny_gguf),
        base_sha256=None,
        lora={"r": 8, "alpha": 16},
        system_prompt=system,
        data_stats={"samples": 281, "crisis": 70},
        training=None,
        qa=None,
        files=files,
        created_at=NOW,
        tool="test",
    )
    models = tmp_path / "models"
    deployment = deploy_version(
        models,
        metadata,
        _report(files),
        lane="production",
        version=None,
        job_id="job-1",
        fetch=lambda f, to: shutil.copyfile(f.path, to),  # type: ignore[arg-type]
        now=NOW,
    )
    return models, deployment


def test_a_deployed_version_has_a_card_and_modelfiles_that_match_its_gguf(tmp_path: Path, tiny_gguf: Path) -> None:
    models, deployment = deploy_tiny_version(tmp_path, tiny_gguf)
    files = deployment.entry.files
    merged = models / files[1].path
    folder = models / deployment.entry.path

    fields = read_gguf(merged).fields
    tokens = fields["tokenizer.ggml.tokens"].value
    template = fields["tokenizer.chat_template"].value
    eos = tokens[fields["tokenizer.ggml.eos_token_id"].value]

    ollama = parse_modelfile((folder / "Modelfile").read_text())
    assert (folder / ollama.source).is_file() and ollama.source == f"./{merged.name}"
    assert ollama.adapter is None and ollama.system == SYSTEM
    assert ollama.template is not None
    assert go_render(ollama.template, CONVERSATION) == render_chat(template, CONVERSATION, eos=eos)
    parameters = dict(ollama.parameters)
    assert [v for k, v in ollama.parameters if k == "stop"] == [eos]
    assert float(parameters["temperature"]) == 0.7 and float(parameters["top_p"]) == 0.9
    assert parameters["num_predict"] == "320" and float(parameters["min_p"]) == 0.05

    with_adapter = parse_modelfile((folder / "Modelfile.adapter").read_text())
    assert with_adapter.source == str(tiny_gguf) and (folder / str(with_adapter.adapter)).is_file()
    assert with_adapter.template == ollama.template and with_adapter.system == SYSTEM

    card = (folder / "README.md").read_text()
    assert card.startswith("# meetara_general_health v1")
    for shown in (SYSTEM, files[1].sha256, "ollama create meetara_general_health -f Modelfile", "| suicide | 96.7% |"):
        assert shown in card, shown
    assert "281 conversations, 70 of them crisis conversations" in card


def test_the_trained_system_prompt_stands_in_for_a_missing_one_as_the_merged_template_does(tiny_gguf: Path) -> None:
    """Ollama sends ``SYSTEM`` first when a conversation has none; the merged GGUF's template does the same."""
    template = with_default_system(str(read_gguf(tiny_gguf).fields["tokenizer.chat_template"].value), SYSTEM)
    markup = chat_markup(template, ["<|im_start|>", "<|im_end|>"], eos="<|im_end|>")
    without_system = CONVERSATION[1:]
    ollama_sends = [{"role": "system", "content": SYSTEM}, *without_system]
    assert markup.render(ollama_sends) == render_chat(template, without_system)
    assert markup_of_gguf(tiny_gguf).stops == ("<|im_end|>",)


LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
    " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
PHI3 = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + '\n' + m['content'] + '<|end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
GEMMA = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{{ '<start_of_turn>' + m['role'] + '\n' + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
)


@pytest.mark.parametrize(
    ("template", "controls", "eos", "stops"),
    [
        (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>", ("<|eot_id|>",)),
        (PHI3, ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|endoftext|>", ("<|end|>", "<|endoftext|>")),
    ],
)
def test_other_template_families_are_read_as_the_same_turns(
    template: str, controls: list[str], eos: str, stops: tuple[str, ...]
) -> None:
    markup = chat_markup(template, controls, eos=eos)
    assert go_render(markup.go_template(), CONVERSATION) == render_chat(template, CONVERSATION, eos=eos)
    assert markup.stops == stops


def test_a_template_that_is_not_turn_by_turn_gets_no_modelfile() -> None:
    with pytest.raises(UnsupportedTemplate, match="system"):
        chat_markup(GEMMA, ["<start_of_turn>", "<end_of_turn>"])
    # turns numbered: no markup per role reproduces it
    odd = "{% for m in messages %}{{ loop.index|string + '. ' + m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with pytest.raises(UnsupportedTemplate):
        chat_markup(odd, [])


def test_a_modelfile_that_cannot_be_written_leaves_the_deploy_and_the_card_saying_why(
    tmp_path: Path, tiny_gguf: Path
) -> None:
    models, deployment = deploy_tiny_version(tmp_path, tiny_gguf, system='Say """hello""" first.')
    folder = models / deployment.entry.path
    assert not (folder / "Modelfile").exists() and not (folder / "Modelfile.adapter").exists()
    assert 'No `Modelfile` was written: a Modelfile cannot quote text holding """' in (folder / "README.md").read_text()


def test_a_long_conversation_is_cut_from_its_oldest_turns_to_fit_the_context(tiny_gguf: Path) -> None:
    from llama_cpp import Llama

    from agents.quality_assurance.chat import _fitting

    llm = Llama(model_path=str(tiny_gguf), n_ctx=512, verbose=False)
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 40} for i in range(40)]
    kept = _fitting(llm, [*turns, {"role": "user", "content": "last"}], 400)
    assert kept[-1]["content"] == "last" and kept[0]["role"] == "user" and len(kept) < 20
    assert kept[:-1] == turns[len(turns) - len(kept) + 1 :]  # the newest turns, in order
    assert _fitting(llm, [{"role": "user", "content": "word " * 2000}], 400)[0]["content"].startswith("word")
