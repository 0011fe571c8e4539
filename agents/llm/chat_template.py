"""A chat template whose default system prompt is the one the model was trained under.

A merged GGUF carries its base model's chat template, and an instruct base's template brings its
own default system prompt (SmolLM2's introduces "SmolLM, trained by Hugging Face"). A user who
runs the file without a system message would then talk to a model in a situation it was never
trained or evaluated in. The template is given a preamble that puts the trained system prompt
first whenever a conversation has none; a system message the user sends still wins.
"""

from __future__ import annotations

import json
import re

__all__ = ["render_chat", "with_default_system"]

_BEGIN = "{#- meetara: default system prompt -#}"
_END = "{#- meetara: end -#}"
_PREAMBLE = re.compile(re.escape(_BEGIN) + ".*?" + re.escape(_END), re.DOTALL)


def with_default_system(template: str, system: str | None) -> str:
    """``template`` with ``system`` as the system message of a conversation that brings none.

    A template that already has a preamble (a merged MeeTARA model used as a base) gets it
    replaced, not a second one; ``None`` removes it (the base's own default applies again).
    """
    template = _PREAMBLE.sub("", template)
    if system is None:
        return template
    # A Jinja string literal: JSON's escapes (\" \\ \n) are ones Jinja and llama.cpp's minja read alike.
    literal = json.dumps(system, ensure_ascii=False)
    preamble = (
        f"{_BEGIN}"
        "{%- if not messages or messages[0]['role'] != 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages -%}}"
        "{%- endif -%}"
        f"{_END}"
    )
    return preamble + template


def render_chat(template: str, messages: list[dict[str, str]], *, bos: str = "", eos: str = "") -> str:
    """The prompt a Jinja chat runtime (llama-cpp-python, ``llama-server --jinja``) builds from ``template``."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    return formatter(messages=messages).prompt  # type: ignore[arg-type]
