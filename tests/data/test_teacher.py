"""The teacher-LLM generator against scripted OpenAI-compatible answers (httpx mock transport)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.data_generation.mixed import MixedGenerator
from agents.data_generation.teacher import (
    SCHEMA,
    MalformedTeacherOutput,
    TeacherGenerator,
    parse_teacher_output,
    teacher_requirement,
)
from agents.data_generation.teacher_client import Completion, HttpTeacher, TeacherUnavailable
from agents.data_generation.teacher_journal import TeacherJournal, request_key
from agents.text.signals import load_signals
from protocol.agents.data_generation import TeacherSettings
from protocol.datasets import EMOTIONS
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
    # A raw line break inside a string (llama.cpp's grammar allows it) is the teacher's text, kept as such.
    with_break = json.dumps({**GOOD, "assistant": f"{GOOD['assistant']}@@Sleep well."}).replace("@@", "\n")
    assert "\nSleep well." in parse_teacher_output(with_break).assistant


def _generator(handler: Any, tmp_path: Path | None = None, **settings: Any) -> TeacherGenerator:
    values: dict[str, Any] = {"base_url": "http://teacher.local/v1", "model": "tiny", **settings}
    journal = TeacherJournal(tmp_path / "journal.jsonl") if tmp_path else None
    return TeacherGenerator(
        load_catalog().domain("sleep"),
        load_material("healthcare", "sleep"),
        load_signals(),
        TeacherSettings(**values),
        journal=journal,
        http_transport=httpx.MockTransport(handler),
    )


def _answer(content: str, prompt_tokens: int = 100, completion_tokens: int = 50) -> httpx.Response:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return httpx.Response(200, json={"choices": [{"message": {"content": content}}], "usage": usage})


@pytest.mark.anyio
async def test_endpoint_generator_asks_for_the_schema_builds_samples_and_accounts_tokens() -> None:
    seen: list[dict[str, Any]] = []
    replies = iter([json.dumps(GOOD), "no json here", json.dumps({**GOOD, "emotion": "nope"})])

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-test"
        return _answer(next(replies))

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEACHER_TEST_API_KEY", "sk-test")
        gen = _generator(
            handler,
            api_key_env="TEACHER_TEST_API_KEY",
            concurrency=1,
            usd_per_million_prompt_tokens=2.0,
            usd_per_million_completion_tokens=10.0,
        )
        samples = await gen.generate(0, range(3))
        await gen.aclose()
    assert samples[0] is not None and samples[1] is None and samples[2] is None
    assert gen.malformed == 2
    good = samples[0]
    assert good.generator == "teacher" and good.emotion == "anxious" and good.domain == "sleep"
    assert [m.role for m in good.messages] == ["system", "user", "assistant"]
    assert "acknowledge_feeling" in good.empathy_markers
    prompt = seen[0]["messages"][1]["content"]
    assert "sleep" in prompt and "ONE JSON object" in prompt
    assert seen[0]["model"] == "tiny"
    fmt = seen[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA
    assert SCHEMA["required"] == ["user", "assistant", "followup_user", "followup_assistant", "emotion"]
    assert set(SCHEMA["properties"]["emotion"]["enum"]) == set(EMOTIONS)
    usage = gen.usage
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (3, 300, 150)
    assert usage.usd == pytest.approx((300 * 2.0 + 150 * 10.0) / 1e6)


@pytest.mark.anyio
async def test_an_endpoint_without_json_schema_gets_json_object_with_the_schema() -> None:
    """llama-cpp-python's server knows only ``json_object`` (+ ``schema``) and answers 500 to ``json_schema``."""
    formats: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        fmt = json.loads(request.content)["response_format"]
        formats.append(fmt)
        await anyio.sleep(0.05)  # requests in flight together all meet the refusal
        if fmt["type"] == "json_schema":
            detail = "('body', 'response_format', 'type') Input should be 'text' or 'json_object', input: json_schema"
            return httpx.Response(500, json={"error": {"message": detail}})
        return _answer(json.dumps(GOOD))

    gen = _generator(handler, concurrency=3)
    samples = await gen.generate(0, range(5))
    await gen.aclose()
    assert all(s is not None for s in samples)
    assert [f["type"] for f in formats].count("json_object") == 5 and formats[-1]["schema"] == SCHEMA
    assert gen.usage.retries == 0 and gen.usage.requests == 5


@pytest.mark.anyio
async def test_every_crisis_reply_a_teacher_writes_opens_with_the_fixed_call_for_help() -> None:
    """Asked-for crises and crises the teacher raised on its own both get the opening, once; others never."""
    opening = load_common().crisis_replies.opening
    crisis_user = "I have taken all of my pills an hour ago and I can't stop shaking, what do I do?"
    answers = {
        0: {**GOOD, "user": crisis_user, "assistant": "That sounds frightening. Call 911 now and stay on the line."},
        1: {**GOOD, "user": crisis_user, "assistant": f"{opening} Stay where you are and keep the door unlocked."},
        2: GOOD,
    }
    indices = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        return _answer(json.dumps(answers[next(indices)]))

    gen = TeacherGenerator(
        load_catalog().domain("sleep"),
        load_material("healthcare", "sleep"),
        load_signals(),
        TeacherSettings(base_url="http://teacher.local/v1", model="tiny", concurrency=1),
        crisis_fraction=0.0,  # no crisis is asked for: the teacher raised these in the user's words
        crisis_opening=opening,
        http_transport=httpx.MockTransport(handler),
    )
    samples = await gen.generate(0, range(3))
    await gen.aclose()
    first, already, ordinary = samples
    assert first is not None and already is not None and ordinary is not None
    assert first.crisis and first.turns("assistant")[0] == f"{opening} {answers[0]['assistant']}"
    assert already.crisis and already.turns("assistant")[0].count(opening) == 1
    assert not ordinary.crisis and ordinary.turns("assistant")[0] == GOOD["assistant"]


@pytest.mark.anyio
async def test_transient_failures_are_retried_with_backoff_and_retry_after_is_honoured() -> None:
    script = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0.3"}, text="slow down"),
            httpx.Response(503, text="overloaded"),
            "connect",
            _answer(json.dumps(GOOD)),
        ]
    )
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        step = next(script)
        if step == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        assert isinstance(step, httpx.Response)
        return step

    gen = _generator(handler, concurrency=1)
    client = gen._client
    assert isinstance(client, HttpTeacher)
    client._backoff_s = 0.05
    (sample,) = await gen.generate(0, range(1))
    await gen.aclose()
    assert sample is not None
    assert gen.usage.retries == 3 and gen.usage.requests == 1
    assert times[1] - times[0] >= 0.3  # Retry-After, not the 0.05 s backoff


@pytest.mark.anyio
async def test_once_a_request_fails_the_others_stop_retrying_and_nothing_more_is_sent() -> None:
    """A sibling waiting out a long Retry-After gives up when another request fails for good."""
    responses = iter(
        [httpx.Response(429, headers={"Retry-After": "120"}, text="slow down"), httpx.Response(400, text="bad model")]
    )
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return next(responses)

    gen = _generator(handler, concurrency=2, max_retries=3)
    with anyio.fail_after(60), pytest.raises(TeacherUnavailable, match="HTTP 400"):  # well inside the 120 s
        await gen.generate(0, range(4))
    await gen.aclose()
    assert calls == 2


@pytest.mark.anyio
async def test_retries_end_and_a_refused_request_is_not_repeated() -> None:
    calls = 0

    def down(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(502, text="bad gateway")

    gen = _generator(down, max_retries=2)
    assert isinstance(gen._client, HttpTeacher)
    gen._client._backoff_s = 0.01
    with pytest.raises(TeacherUnavailable, match="after 3 attempt"):
        await gen.generate(0, range(1))
    assert calls == 3

    calls = 0

    def refuses(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400, json={"error": "bad model"})

    gen = _generator(refuses)
    with pytest.raises(TeacherUnavailable, match="HTTP 400"):
        await gen.generate(0, range(1))
    assert calls == 1


@pytest.mark.anyio
async def test_requests_in_flight_are_bounded_and_the_rate_limit_spaces_them() -> None:
    in_flight = peak = 0
    starts: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        starts.append(time.monotonic())
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.05)
        in_flight -= 1
        return _answer(json.dumps(GOOD))

    gen = _generator(handler, concurrency=3)
    samples = await gen.generate(0, range(12))
    await gen.aclose()
    assert len(samples) == 12 and all(s is not None for s in samples)
    assert peak == 3

    starts.clear()
    gen = _generator(handler, concurrency=4, requests_per_minute=600)  # one start every 0.1 s
    begun = time.monotonic()
    await gen.generate(0, range(5))
    await gen.aclose()
    # The k-th request starts no earlier than k slots after the first could. A busy machine may
    # start two late ones back to back, never one early: a bound, not a gap between neighbours.
    slack = 0.002  # an event loop may wake a sleeper up to its clock resolution early
    assert all(start >= begun + k * 0.1 - slack for k, start in enumerate(sorted(starts))), starts


@pytest.mark.anyio
async def test_an_interrupted_generation_resumes_without_asking_twice(tmp_path: Path) -> None:
    """A crash after some answers: the next run reuses every journaled answer and asks only for the rest."""
    asked: list[str] = []

    def key_of(request: httpx.Request) -> str:
        body = json.loads(request.content)
        return f"{body['seed']}:{body['messages'][1]['content']}"

    def dies_after_five(request: httpx.Request) -> httpx.Response:
        if len(asked) == 5:
            raise httpx.ConnectError("teacher went away", request=request)
        asked.append(key_of(request))
        return _answer(json.dumps(GOOD))

    first = _generator(dies_after_five, tmp_path, concurrency=1, max_retries=0)
    with pytest.raises(TeacherUnavailable):
        await first.generate(3, range(12))
    await first.aclose()
    assert first.usage.requests == 5

    def healthy(request: httpx.Request) -> httpx.Response:
        asked.append(key_of(request))
        return _answer(json.dumps(GOOD))

    second = _generator(healthy, tmp_path, concurrency=4)
    samples = await second.generate(3, range(12))
    await second.aclose()
    assert all(s is not None for s in samples) and len(samples) == 12
    assert second.usage.reused == 5 and second.usage.requests == 7
    assert len(asked) == 12 and len(set(asked)) == 12  # every conversation asked for exactly once


def test_a_torn_journal_line_is_dropped_and_appending_continues(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = TeacherJournal(path)
    journal.add("a", Completion("one", 1, 2))
    journal.close()
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": "b", "text": "tw')  # a crash mid-append
    journal = TeacherJournal(path)
    assert len(journal) == 1 and journal.get("a") == Completion("one", 1, 2)
    journal.add("c", Completion("three", 3, 4))
    journal.close()
    reopened = TeacherJournal(path)
    assert len(reopened) == 2 and reopened.get("c") == Completion("three", 3, 4)
    reopened.close()


def test_request_keys_change_with_what_is_asked() -> None:
    base = {"prompt": "p", "seed": 1, "temperature": 0.8}
    assert request_key("t", base) == request_key("t", dict(reversed(base.items())))
    assert request_key("t", base) != request_key("u", base)
    assert request_key("t", base) != request_key("t", {**base, "temperature": 0.7})


def test_requirements_are_explained() -> None:
    assert "set teacher.gguf_path or teacher.base_url" in (teacher_requirement(TeacherSettings()) or "")
    assert "not found" in (teacher_requirement(TeacherSettings(gguf_path="/nope/model.gguf")) or "")
    both = TeacherSettings(gguf_path="/x.gguf", base_url="http://x/v1")
    assert "not both" in (teacher_requirement(both) or "")
    missing_key = TeacherSettings(base_url="http://x/v1", api_key_env="SURELY_UNSET_TEACHER_API_KEY")
    assert "is not set" in (teacher_requirement(missing_key) or "")
    for bad in ("localhost:8080/v1", "ftp://host/v1", "http:///v1"):
        with pytest.raises(ValueError, match="http"):
            TeacherSettings(base_url=bad)
    # Only API-key variables: a caller naming its own endpoint must not get the agent's other secrets.
    for secret in ("REDIS_PASSWORD", "MEETARA_MCP_TOKEN", "MEETARA_BUS_API_KEY", "openai_api_key"):
        with pytest.raises(ValueError, match="must name an API key variable"):
            TeacherSettings(base_url="http://x/v1", api_key_env=secret)
    assert TeacherSettings(api_key_env="OPENAI_API_KEY").api_key_env == "OPENAI_API_KEY"


@pytest.mark.slow
@pytest.mark.anyio
async def test_gguf_teacher_answers_within_the_schema_through_llama_cpp(tmp_path: Path) -> None:
    """In process, llama-cpp-python's grammar from the schema: even a 135M model answers with our object."""
    from agents.llm.default_base import default_base_gguf

    settings = TeacherSettings(gguf_path=str(default_base_gguf()), max_tokens=1024, temperature=0.7)
    assert teacher_requirement(settings) is None
    domain = load_catalog().domain("sleep")
    journal = TeacherJournal(tmp_path / "journal.jsonl")
    gen = TeacherGenerator(domain, load_material("healthcare", "sleep"), load_signals(), settings, journal=journal)
    samples = await gen.generate(0, range(2))
    await gen.aclose()
    answers = [json.loads(line)["text"] for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert len(answers) == 2
    for answer in answers:
        assert set(json.loads(answer)) == set(SCHEMA["properties"])  # parses, with exactly the schema's keys
    assert gen.usage.requests == 2 and gen.usage.completion_tokens > 0
    assert gen.malformed == sum(s is None for s in samples)  # limits the grammar leaves to validation


@pytest.mark.anyio
async def test_the_mixed_generator_has_each_draft_rewritten_and_keeps_its_labels(tmp_path: Path) -> None:
    schemas: list[dict[str, Any]] = []

    def rewrites(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        schemas.append(body["response_format"]["json_schema"]["schema"])
        prompt = body["messages"][1]["content"]
        draft = json.loads(prompt.split("Conversation (JSON): ", 1)[1].split("\n", 1)[0])
        if draft["user"] == dropped:
            draft.pop("followup_user")  # this rewrite drops a turn: rejected
        # A rewrite stays within the schema's length limits, as a constrained teacher's must.
        return _answer(json.dumps({key: f"Put simply: {text}"[:900] for key, text in draft.items()}))

    catalog = load_catalog()
    domain = catalog.domain("sleep")
    material = load_material("healthcare", "sleep")
    drafts = CompositionalGenerator(domain, material, load_common(), load_signals(), crisis_fraction=0.3)
    originals = [drafts.sample(5, i) for i in range(16)]
    two = [i for i, d in enumerate(originals) if len(d.turns("user")) == 2]
    assert two and any(d.crisis for d in originals)  # both shapes and crisis drafts get rewritten
    dropped = originals[two[0]].turns("user")[0]
    gen = MixedGenerator(
        drafts,
        domain,
        material,
        load_signals(),
        TeacherSettings(base_url="http://teacher.local/v1", model="m"),
        journal=TeacherJournal(tmp_path / "journal.jsonl"),
        http_transport=httpx.MockTransport(rewrites),
    )
    samples = await gen.generate(5, range(16))
    await gen.aclose()
    assert samples[two[0]] is None and gen.malformed == 1 and gen.usage.requests == 16
    for draft, sample in zip(originals, samples, strict=True):
        if sample is None:
            continue
        assert sample.generator == "mixed" and sample.id.startswith("sleep-m5-")
        assert (sample.emotion, sample.crisis, sample.topic, sample.split_key) == (
            draft.emotion,
            draft.crisis,
            draft.topic,
            draft.split_key,
        )
        assert sample.turns("user") == [f"Put simply: {t}" for t in draft.turns("user")]
        assert sample.messages[0] == draft.messages[0]  # the draft's system prompt
    assert {tuple(s["required"]) for s in schemas} == {
        ("user", "assistant"),
        ("user", "assistant", "followup_user", "followup_assistant"),
    }
