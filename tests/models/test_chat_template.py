"""The merged model's chat template sends the system prompt the model was trained under."""

from __future__ import annotations

import pytest

from agents.llm.chat_template import render_chat, with_default_system
from agents.llm.default_base import default_base_gguf
from agents.llm.gguf_fields import read_gguf

TRAINED = "You are MeeTARA, a caring health guide. Say \"see a doctor\" when it's needed; don't {{ guess }}."
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def smollm2_template() -> str:
    """The pip-shipped base model's template: it brings a default system prompt of its own."""
    template = read_gguf(default_base_gguf()).value("tokenizer.chat_template")
    assert isinstance(template, str) and "SmolLM" in template
    return template


@pytest.mark.parametrize("which", ["smollm2", "chatml"])
def test_a_conversation_without_a_system_message_is_sent_the_trained_one(which: str, smollm2_template: str) -> None:
    template = with_default_system(smollm2_template if which == "smollm2" else CHATML, TRAINED)
    prompt = render_chat(template, [{"role": "user", "content": "I have a headache."}])
    assert prompt.startswith("<|im_start|>system\n" + TRAINED + "<|im_end|>\n<|im_start|>user\nI have a headache.")
    assert "SmolLM" not in prompt
    assert prompt.count("<|im_start|>system") == 1


def test_a_system_message_the_user_sends_wins(smollm2_template: str) -> None:
    template = with_default_system(smollm2_template, TRAINED)
    messages = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Bonjour"}]
    prompt = render_chat(template, messages)
    assert "Answer in French." in prompt and TRAINED not in prompt
    assert render_chat(template, messages) == render_chat(smollm2_template, messages)


def test_a_later_turn_renders_as_the_base_template_renders_it(smollm2_template: str) -> None:
    """Only the missing system message changes: the rest of a conversation is rendered as before."""
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "My knee hurts."},
    ]
    ours = render_chat(with_default_system(smollm2_template, TRAINED), turns)
    theirs = render_chat(smollm2_template, [{"role": "system", "content": TRAINED}, *turns])
    assert ours == theirs


def test_a_merged_model_used_as_a_base_gets_its_preamble_replaced_not_stacked(smollm2_template: str) -> None:
    once = with_default_system(smollm2_template, "first prompt")
    twice = with_default_system(once, TRAINED)
    assert twice == with_default_system(smollm2_template, TRAINED)
    prompt = render_chat(twice, [{"role": "user", "content": "Hi"}])
    assert TRAINED in prompt and "first prompt" not in prompt
    # No prompt to send (a category model): the earlier model's prompt goes, the base's default is back.
    assert with_default_system(once, None) == smollm2_template


def test_a_prompt_with_lines_and_accents_is_sent_as_written(smollm2_template: str) -> None:
    system = "Tu es MeeTARA, un guide de santé.\nRéponds avec soin — et oriente vers un médecin. 🙂"
    prompt = render_chat(with_default_system(smollm2_template, system), [{"role": "user", "content": "Salut"}])
    assert prompt.startswith("<|im_start|>system\n" + system + "<|im_end|>")
