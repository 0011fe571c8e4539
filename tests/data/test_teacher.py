"""The teacher-LLM generator against an OpenAI-compatible endpoint (httpx mock transport)."""

from __future__ import annotations

import json

import httpx
import pytest

from agents.data_generation import load_material
from agents.data_generation.teacher import (
    MalformedTeacherOutput,
    TeacherGenerator,
    parse_teacher_output,
    teacher_requirement,
)
from agents.text.signals import load_signals
from protocol.agents.data_generation import TeacherSettings
from runtime import load_catalog

GOOD = {
    "user": "I've been feeling anxious because I wake up at three every night. How can I get back to sleep?",
    "assistant": "It sounds like those early wake-ups are really wearing you down, and that's understandable. "
    "Keep the lights low, avoid checking the clock, and try slow breathing. What tends to be on your mind?",
    "followup_user": None,
    "followup_assistant": None,
    "emotion": "anxious",
}


@pytest.mark.parametrize(
    ("completion", "problem"),
    [
        ("Sure! Here is a conversation about sleep.", "no JSON object"),
        ('{"user": "hi", "assistant": }', "invalid JSON"),
        (json.dumps({**GOOD, "emotion": "euphoric"}), "unknown emotion"),
        (json.dumps({**GOOD, "extra": 1}), "wrong shape"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "assistant"}), "wrong shape"),
        (json.dumps({**GOOD, "followup_user": "And then?"}), "both be set or both null"),
    ],
)
def test_malformed_completions_are_rejected(completion: str, problem: str) -> None:
    with pytest.raises(MalformedTeacherOutput, match=problem):
        parse_teacher_output(completion)


def test_a_wrapped_json_object_is_accepted() -> None:
    assert parse_teacher_output("Here you go:\n" + json.dumps(GOOD) + "\nHope it helps").emotion == "anxious"


def test_endpoint_generator_builds_samples_and_counts_failures() -> None:
    seen: list[dict[str, object]] = []
    replies = iter([json.dumps(GOOD), "no json here", json.dumps({**GOOD, "emotion": "nope"})])

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-test"
        return httpx.Response(200, json={"choices": [{"message": {"content": next(replies)}}]})

    catalog = load_catalog()
    domain = catalog.domain("sleep")
    settings = TeacherSettings(base_url="http://teacher.local/v1", model="tiny", api_key_env="MEETARA_TEST_KEY")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEETARA_TEST_KEY", "sk-test")
        gen = TeacherGenerator(
            domain,
            load_material("healthcare", "sleep"),
            load_signals(),
            settings,
            http_transport=httpx.MockTransport(handler),
        )
        samples = [gen.sample(0, i) for i in range(3)]
    assert samples[0] is not None and samples[1] is None and samples[2] is None
    assert gen.malformed == 2
    good = samples[0]
    assert good.generator == "teacher" and good.emotion == "anxious" and good.domain == "sleep"
    assert [m.role for m in good.messages] == ["system", "user", "assistant"]
    assert "acknowledge_feeling" in good.empathy_markers
    prompt = seen[0]["messages"][1]["content"]  # type: ignore[index]
    assert "sleep" in prompt and "ONE JSON object" in prompt
    assert seen[0]["model"] == "tiny" and seen[0]["response_format"] == {"type": "json_object"}


def test_requirements_are_explained() -> None:
    assert teacher_requirement(TeacherSettings()) == "set teacher.gguf_path or teacher.base_url"
    assert "not found" in (teacher_requirement(TeacherSettings(gguf_path="/nope/model.gguf")) or "")
    both = TeacherSettings(gguf_path="/x.gguf", base_url="http://x/v1")
    assert "not both" in (teacher_requirement(both) or "")
    missing_key = TeacherSettings(base_url="http://x/v1", api_key_env="MEETARA_SURELY_UNSET_KEY")
    assert "is not set" in (teacher_requirement(missing_key) or "")


@pytest.mark.slow
def test_gguf_teacher_runs_through_llama_cpp_and_rejects_off_schema_output() -> None:
    """A 135M model is no teacher: what matters is that its off-schema JSON is counted, not kept."""
    from agents.llm.default_base import default_base_gguf

    settings = TeacherSettings(gguf_path=str(default_base_gguf()), max_tokens=96, temperature=0.7)
    assert teacher_requirement(settings) is None
    domain = load_catalog().domain("sleep")
    gen = TeacherGenerator(domain, load_material("healthcare", "sleep"), load_signals(), settings)
    samples = [gen.sample(0, i) for i in range(2)]
    for s in samples:
        assert s is None or s.generator == "teacher"
    assert gen.malformed == sum(s is None for s in samples)
