"""Ollama ``Modelfile``s for a deployed version: ``ollama create NAME -f Modelfile`` with no editing.

Ollama does not run a GGUF's Jinja chat template; it needs a Go template. The template here is
read off the model's own: the GGUF's ``tokenizer.chat_template`` is rendered on a probe
conversation with marked contents, and the text around each content is that role's markup (where
a turn's end and the next turn's start meet, the split is after the first control token and its
whitespace, ``<|im_end|>\\n`` | ``<|im_start|>user\\n``). The markup is then checked on a second,
longer conversation: rendered by hand it must equal the Jinja rendering character for character,
or no Modelfile is written (the reason goes into the model card). The system prompt the model was
trained under becomes ``SYSTEM``, which Ollama sends when a conversation brings none, and the
sampling QA measured the model at becomes its ``PARAMETER``s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.llm.chat_template import render_chat
from agents.llm.gguf_fields import read_gguf
from protocol import InvalidParams
from protocol.agents.gguf_creation import GgufFile, ModelMetadata
from runtime import atomic_write

__all__ = [
    "ChatMarkup",
    "UnsupportedTemplate",
    "chat_markup",
    "markup_of_gguf",
    "modelfile_text",
    "write_modelfiles",
]

_ROLES = ("system", "user", "assistant")
_OLLAMA_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "max_tokens": "num_predict",
}
"""QA's sampling settings by the name of Ollama's parameter for each."""
_CONTROL = 3
"""``tokenizer.ggml.token_type`` of a control token (``<|im_end|>``, ``<|eot_id|>``...)."""


class UnsupportedTemplate(InvalidParams):
    """The chat template is not one turn-by-turn markup that a Go template can reproduce."""


@dataclass(frozen=True, slots=True)
class ChatMarkup:
    """The text around each role's content, and the prompt that opens the model's reply."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str
    stops: tuple[str, ...]

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt for ``messages`` (without BOS), as the Go template renders it."""
        turns = [self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages]
        return "".join(turns) + self.generation

    def go_template(self) -> str:
        """Ollama's ``TEMPLATE``: the same markup over ``.Messages``."""
        branches = [
            f'{{{{ if eq .Role "{role}" }}}}' if i == 0 else f'{{{{ else if eq .Role "{role}" }}}}'
            for i, role in enumerate(_ROLES)
        ]
        body = "".join(
            f"{branch}{self.prefix[role]}{{{{ .Content }}}}{self.suffix[role]}"
            for branch, role in zip(branches, _ROLES, strict=True)
        )
        return f"{{{{ range .Messages }}}}{body}{{{{ end }}}}{{{{ end }}}}{self.generation}"


def _probe(tag: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"<<{tag}-system>>"},
        {"role": "user", "content": f"<<{tag}-user-1>>"},
        {"role": "assistant", "content": f"<<{tag}-assistant-1>>"},
        {"role": "user", "content": f"<<{tag}-user-2>>"},
    ]


def _split(gap: str, controls: Sequence[str]) -> tuple[str, str]:
    """``gap`` (one turn's end and the next one's start) as (end, start)."""
    opening = max((c for c in controls if c and gap.startswith(c)), key=len, default=None)
    if opening is None:
        return "", gap
    end = len(opening)
    while end < len(gap) and gap[end].isspace():
        end += 1
    return gap[:end], gap[end:]


def chat_markup(template: str, controls: Sequence[str], *, eos: str = "") -> ChatMarkup:
    """The markup of a Jinja chat ``template``; ``controls``: the vocabulary's control tokens.

    Rendered without a BOS text: the runtime (llama.cpp, Ollama) adds BOS where the GGUF says to.
    """
    try:
        rendered = render_chat(template, _probe("probe"), eos=eos)
    except Exception as exc:  # a template may raise on a system message (gemma's does)
        raise UnsupportedTemplate(f"the chat template cannot render a system, user, assistant turn: {exc}") from exc
    contents = [m["content"] for m in _probe("probe")]
    pieces, rest = [], rendered
    for content in contents:
        before, found, rest = rest.partition(content)
        if not found:
            raise UnsupportedTemplate(f"the chat template does not show a message's content as it is ({content})")
        pieces.append(before)
    head, gaps, tail = pieces[0], pieces[1:], rest
    system_end, user_start = _split(gaps[0], controls)
    user_end, assistant_start = _split(gaps[1], controls)
    assistant_end, user_start_again = _split(gaps[2], controls)
    if user_start_again != user_start or not tail.startswith(user_end):
        raise UnsupportedTemplate("the chat template's turns are not marked the same way each time")
    stops = tuple(dict.fromkeys(s for s in (assistant_end.strip(), eos) if s))
    markup = ChatMarkup(
        prefix={"system": head, "user": user_start, "assistant": assistant_start},
        suffix={"system": system_end, "user": user_end, "assistant": assistant_end},
        generation=tail[len(user_end) :],
        stops=stops,
    )
    _reproduces(template, markup, eos)
    return markup


def _reproduces(template: str, markup: ChatMarkup, eos: str) -> None:
    """Refuses ``markup`` unless it renders a longer conversation exactly as ``template`` does."""
    check = [
        {"role": "system", "content": "Be brief.\nAnswer kindly."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Two lines:\nfirst, then second."},
        {"role": "assistant", "content": "First.\nSecond."},
        {"role": "user", "content": "Thanks"},
    ]
    try:
        expected = render_chat(template, check, eos=eos)
    except Exception as exc:  # Jinja raises its own errors, whatever the template says
        raise UnsupportedTemplate(f"the chat template cannot render a longer conversation: {exc}") from exc
    if expected != markup.render(check):
        raise UnsupportedTemplate("the chat template's rendering depends on more than each turn's role and content")
    if any("{{" in text or '"""' in text for text in (*markup.prefix.values(), *markup.suffix.values())):
        raise UnsupportedTemplate("the chat markup holds text a Modelfile cannot quote")


def markup_of_gguf(path: Path) -> ChatMarkup:
    """The chat markup of a GGUF file's own template and vocabulary."""
    fields = read_gguf(path).fields

    def value(key: str) -> object:
        field = fields.get(key)
        return field.value if field is not None else None

    template, tokens, types = (value(f"tokenizer.{k}") for k in ("chat_template", "ggml.tokens", "ggml.token_type"))
    if not isinstance(template, str) or not isinstance(tokens, list) or not isinstance(types, list):
        raise UnsupportedTemplate(f"{path.name} carries no chat template or vocabulary")
    controls = [str(t) for t, kind in zip(tokens, types, strict=False) if kind == _CONTROL]

    def token(key: str) -> str:
        index = value(key)
        return str(tokens[index]) if isinstance(index, int) and 0 <= index < len(tokens) else ""

    return chat_markup(template, controls, eos=token("tokenizer.ggml.eos_token_id"))


def _quoted(text: str) -> str:
    if '"""' in text:
        raise InvalidParams('a Modelfile cannot quote text holding """')
    return f'"""{text}"""'


def modelfile_text(
    source: str,
    markup: ChatMarkup,
    *,
    system: str | None,
    parameters: dict[str, float | int],
    adapter: str | None = None,
    comment: str = "",
) -> str:
    """A Modelfile: ``FROM source`` (and ``ADAPTER adapter``), template, system prompt, stops, sampling."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append(f"FROM {source}")
    if adapter is not None:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f"TEMPLATE {_quoted(markup.go_template())}")
    if system is not None:
        lines.append(f"SYSTEM {_quoted(system)}")
    for stop in markup.stops:  # Ollama strips the quotes and reads no escapes
        if '"' in stop or "\n" in stop:
            raise InvalidParams(f"a Modelfile cannot quote the stop {stop!r}")
        lines.append(f'PARAMETER stop "{stop}"')
    lines += [f"PARAMETER {name} {value:g}" for name, value in parameters.items()]  # 320, not 320.0
    return "\n".join(lines) + "\n"


def write_modelfiles(
    folder: Path,
    metadata: ModelMetadata,
    sampling: dict[str, float],
    files: Sequence[GgufFile],
    *,
    merged_name: str,
    adapter_name: str,
) -> dict[str, str | None]:
    """Writes ``merged_name`` (the merged model) and ``adapter_name`` (base + adapter) into ``folder``,
    where the version's ``files`` already are; per Modelfile, why it was not written (None: written)."""
    merged = next((Path(f.path).name for f in files if f.kind == "merged"), None)
    adapter = next((Path(f.path).name for f in files if f.kind == "adapter"), None)
    base = metadata.base_model_path if metadata.base_model_path.endswith(".gguf") else None
    problems: dict[str, str | None] = {}
    try:
        markup = markup_of_gguf(folder / merged if merged else Path(base or ""))
    except (InvalidParams, OSError, ValueError) as exc:
        reason = f"the chat template could not be read as turns ({exc})"
        return {merged_name: reason, adapter_name: reason}
    parameters = {_OLLAMA_NAMES[k]: v for k, v in sampling.items() if k in _OLLAMA_NAMES}
    comment = f"{metadata.model_id} {metadata.version or ''}: ollama create {metadata.model_id} -f {{name}}"
    plans = {
        merged_name: (f"./{merged}", None, None if merged else "the version has no merged model"),
        adapter_name: (
            base or "",
            f"./{adapter}",
            None if adapter and base else "the version has no adapter, or its base model is not a GGUF file",
        ),
    }
    for name, (source, lora, problem) in plans.items():
        if problem is None:
            try:
                text = modelfile_text(
                    source,
                    markup,
                    system=metadata.system_prompt,
                    parameters=parameters,
                    adapter=lora,
                    comment=comment.format(name=name),
                )
            except InvalidParams as exc:
                problem = str(exc)
            else:
                with atomic_write(folder / name) as f:
                    f.write(text)
        problems[name] = problem
    return problems
