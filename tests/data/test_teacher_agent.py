"""``data_generation.generate`` with the teacher generator, against an HTTP endpoint that fails on cue.

The endpoint is a small OpenAI-shaped app served by uvicorn on a free port: it answers with a
fixed valid conversation and can be told to drop every request, so the test controls where a
generation is interrupted. The real-model counterpart is ``tests/models/test_teacher_server.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agents.data_generation import DataGenerationAgent
from protocol.agents.data_generation import CheckTeacherOutput, GenerateOutput
from runtime import ToolFailed, open_swarm
from runtime.testing import free_port

pytestmark = pytest.mark.anyio

CONVERSATION = {
    "user": "I keep putting off opening my bank statements because I'm scared of what I'll see. Where do I start?",
    "assistant": "That fear is really common, and it makes sense to feel anxious about it. Start small: open one "
    "statement, list the regular payments, and note anything you don't recognise. What feels hardest about it?",
    "followup_user": None,
    "followup_assistant": None,
    "emotion": "anxious",
}


@dataclass
class Endpoint:
    """What the fake teacher was asked, and whether it answers."""

    url: str
    prompts: list[str] = field(default_factory=list)
    answer_limit: int | None = None
    """Answer this many requests in all, then refuse every one with a 503."""
    slow_answers: dict[int, float] = field(default_factory=dict)
    """Answer number (1-based) -> seconds it takes to arrive, once counted as answered (and billed)."""


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    port = free_port()
    state = Endpoint(url=f"http://127.0.0.1:{port}/v1")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "fake-teacher", "object": "model"}]})

    async def completions(request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        if state.answer_limit is not None and len(state.prompts) >= state.answer_limit:
            return JSONResponse({"error": "overloaded"}, status_code=503)
        state.prompts.append(f"{body['seed']}:{body['messages'][1]['content']}")
        await anyio.sleep(state.slow_answers.get(len(state.prompts), 0.0))
        usage = {"prompt_tokens": 200, "completion_tokens": 80, "total_tokens": 280}
        message = {"role": "assistant", "content": json.dumps(CONVERSATION)}
        return JSONResponse({"choices": [{"index": 0, "message": message}], "usage": usage})

    app = Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", completions, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the fake teacher did not start"
        time.sleep(0.05)
    yield state
    server.should_exit = True
    thread.join(timeout=30)


async def test_an_interrupted_teacher_generation_is_resumed_without_paying_twice(  # type: ignore[no-untyped-def]
    endpoint: Endpoint, settings_factory, memory_url: str
) -> None:
    teacher = {
        "base_url": endpoint.url,
        "model": "fake-teacher",
        "max_retries": 0,
        "concurrency": 2,
        "usd_per_million_prompt_tokens": 1.0,
        "usd_per_million_completion_tokens": 4.0,
    }
    args = {"domain": "financial", "count": 12, "generator": "teacher", "teacher": teacher, "filter": False}
    settings = settings_factory(memory_url)
    async with open_swarm(settings, [DataGenerationAgent]) as swarm:
        endpoint.answer_limit = 5  # the teacher goes away after five answers,
        endpoint.slow_answers = {5: 3.0}  # and the fifth is still on its way when the sixth is refused
        with pytest.raises(ToolFailed) as failed:
            await swarm.client.call_model("data_generation", "generate", args, GenerateOutput, timeout=300)
        error = failed.value.result.structured_content or {}
        assert "a re-run reuses the answers already received" in str(error.get("error"))
        assert error["step"] == "generate"  # the Conductor retries a call that stopped at a checkpoint
        assert error["teacher_usage"]["requests"] == 5 and error["teacher_usage"]["prompt_tokens"] == 1000

        endpoint.answer_limit = None  # back; the Conductor's retry sends the same call again
        out = await swarm.client.call_model("data_generation", "generate", args, GenerateOutput, timeout=300)
    usage = out.teacher_usage
    assert usage is not None and out.kept == 12 and out.stats.samples + out.eval_samples == 12
    assert (usage.reused, usage.requests) == (5, 7)
    assert (usage.prompt_tokens, usage.completion_tokens) == (7 * 200, 7 * 80)
    assert usage.usd == pytest.approx((1400 * 1.0 + 560 * 4.0) / 1e6)
    assert len(endpoint.prompts) == 12 == len(set(endpoint.prompts))  # each conversation paid for once
    (journal,) = (settings.data_dir / "cache" / "teacher" / "financial").glob("*.jsonl")
    assert len(journal.read_text().splitlines()) == 12


async def test_check_teacher_names_what_is_wrong(endpoint: Endpoint, settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), [DataGenerationAgent]) as swarm:

        async def check(**teacher: object) -> CheckTeacherOutput:
            arguments = {"teacher": teacher}
            return await swarm.client.call_model("data_generation", "check_teacher", arguments, CheckTeacherOutput)

        ok = await check(base_url=endpoint.url, model="fake-teacher")
        assert ok.ok and ok.models == ["fake-teacher"]
        wrong = await check(base_url=endpoint.url, model="gpt-x")
        assert not wrong.ok and "does not serve model 'gpt-x'; it serves: fake-teacher" in (wrong.reason or "")
        gone = await check(base_url=f"http://127.0.0.1:{free_port()}/v1", model="fake-teacher")
        assert not gone.ok and "not reachable" in (gone.reason or "")
        missing = await check(gguf_path="/nowhere/teacher.gguf")
        assert not missing.ok and "not found" in (missing.reason or "")
