"""The teacher-LLM generator: a language model writes each conversation in our schema.

Backends: a GGUF file through llama-cpp-python, or any OpenAI-compatible chat endpoint
(llama-server, vLLM, Ollama, hosted APIs). The prompt carries the domain, a topic and a
situation from the domain's material as grounding; the completion is constrained to the JSON
schema of one conversation (structured output), and anything that still does not validate is
rejected (the sample is skipped and counted), never patched up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.data_generation.material import DomainMaterial
from agents.data_generation.teacher_client import Completion, TeacherClient, TeacherUnavailable, open_teacher
from agents.data_generation.teacher_journal import TeacherJournal, request_key
from agents.text.signals import Signals
from protocol.agents.data_generation import DEFAULT_CRISIS_FRACTION, TeacherSettings, TeacherUsage
from protocol.datasets import EMOTIONS, ChatMessage, ConversationSample, Emotion, EmpathyMarker
from runtime import Domain

__all__ = [
    "SCHEMA",
    "MalformedTeacherOutput",
    "TeacherRequest",
    "TeacherConversation",
    "TeacherGenerator",
    "journal_path",
    "parse_teacher_output",
    "teacher_requirement",
]

log = structlog.get_logger("meetara.data_generation.teacher")

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

_INSTRUCTIONS = """You write one realistic training conversation between a user and MeeTARA, an \
empathetic {role}. Domain: {domain} ({description}). Topic: {topic}. The user is feeling {emotion}. \
Ground the conversation in this situation: "{situation}"
{crisis}
Reply with ONE JSON object and nothing else, with exactly these keys:
  "user": the user's first message (first person, 15-80 words),
  "assistant": MeeTARA's reply (40-140 words): acknowledge the feeling, give concrete safe advice, \
ask one follow-up question, suggest a professional when appropriate, never diagnose,
  "followup_user": the user's second message (or null),
  "followup_assistant": MeeTARA's second reply (or null),
  "emotion": one of {emotions}."""

_CRISIS = (
    "The user's message signals {kind}. The reply must urge contacting emergency services "
    "(911 in the US, 999 in the UK, 112 in Europe) and, for self-harm, a crisis line (988 in the US, "
    "Samaritans 116 123 in the UK and Ireland), without diagnosing."
)


class MalformedTeacherOutput(ValueError):
    """The teacher's completion is not one valid conversation object."""


class TeacherTurns(BaseModel):
    """The turns a teacher writes, bounded; a written conversation and a rewrite share them."""

    model_config = ConfigDict(extra="forbid")
    # The lengths are in the schema, so a grammar closes a rambling small teacher's string at the limit
    # before max_tokens cuts the object short. llama.cpp spells maxLength out as one nested optional
    # per character, and llama-cpp-python cannot parse such a grammar much past 700 levels: replies
    # stay within 900 characters (about 150 words).
    user: str = Field(min_length=10, max_length=500)
    assistant: str = Field(min_length=20, max_length=900)
    followup_user: str | None = Field(default=None, max_length=500)
    followup_assistant: str | None = Field(default=None, max_length=900)


class TeacherConversation(TeacherTurns):
    """One conversation as the teacher writes it; its JSON schema constrains the teacher's output."""

    emotion: Emotion


def _schema() -> dict[str, Any]:
    schema = TeacherConversation.model_json_schema()
    # Structured-output endpoints (OpenAI's strict mode) want every key required; null stays allowed.
    schema["required"] = list(schema["properties"])
    for prop in schema["properties"].values():
        prop.pop("default", None)
    return schema


SCHEMA: dict[str, Any] = _schema()
"""The JSON schema sent as the completion's ``response_format``."""
SCHEMA_NAME = "conversation"


def parse_teacher_output(text: str) -> TeacherConversation:
    """The conversation object in a completion; raises ``MalformedTeacherOutput`` otherwise."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        raise MalformedTeacherOutput("no JSON object in the completion")
    try:
        # Not strict: a raw line break inside a string (llama.cpp's JSON grammar lets one through) is
        # still the text the teacher meant; everything else about the object is checked below.
        raw = json.loads(match.group(0), strict=False)
    except ValueError as exc:
        raise MalformedTeacherOutput(f"invalid JSON: {exc}") from None
    if isinstance(raw, dict) and raw.get("emotion") not in EMOTIONS:
        raise MalformedTeacherOutput(f"unknown emotion {raw.get('emotion')!r}")
    try:
        out = TeacherConversation.model_validate(raw)
    except ValidationError as exc:
        raise MalformedTeacherOutput(f"wrong shape: {exc.errors(include_input=False)[0]['msg']}") from None
    if (out.followup_user is None) != (out.followup_assistant is None):
        raise MalformedTeacherOutput("followup_user and followup_assistant must both be set or both null")
    return out


def teacher_requirement(settings: TeacherSettings | None) -> str | None:
    """Why the teacher cannot run with these settings (``None`` when it can)."""
    has_llama = importlib.util.find_spec("llama_cpp") is not None
    if settings is None:
        return None  # an endpoint needs only httpx, a dependency of the project
    if settings.gguf_path and settings.base_url:
        return "give either teacher.gguf_path or teacher.base_url, not both"
    if settings.gguf_path:
        if not Path(settings.gguf_path).is_file():
            return f"teacher model file not found: {settings.gguf_path}"
        if not has_llama:
            return "a GGUF teacher needs llama-cpp-python (pip install llama-cpp-python)"
        return None
    if settings.base_url:
        if settings.api_key_env and settings.api_key_env not in os.environ:
            return f"environment variable {settings.api_key_env} (the teacher API key) is not set"
        return None
    return "set teacher.gguf_path or teacher.base_url (--teacher-url)"


@dataclass(frozen=True, slots=True)
class TeacherRequest:
    """One conversation asked of the teacher, with the labels the prompt fixed."""

    index: int
    system: str
    prompt: str
    seed: int
    topic: str
    split_key: str
    crisis: bool
    key: str
    draft: ConversationSample | None = None
    """The conversation the teacher rewrites (mixed generator)."""
    schema: dict[str, Any] | None = None
    """The answer's JSON schema when it is not the generator's own."""


def journal_path(data_dir: Path, domain: str, settings: TeacherSettings) -> Path:
    """``data/cache/teacher/{domain}/{teacher}.jsonl``: the completions this teacher gave for the domain."""
    teacher = hashlib.sha256(_identity(settings).encode()).hexdigest()[:16]
    return data_dir / "cache" / "teacher" / domain / f"{teacher}.jsonl"


def _identity(settings: TeacherSettings) -> str:
    return f"gguf:{settings.gguf_path}" if settings.gguf_path else f"{settings.base_url}|{settings.model}"


class TeacherGenerator:
    """Asks a teacher LLM for each conversation, several at once, each request paid for once."""

    name = "teacher"
    schema: dict[str, Any] = SCHEMA
    schema_name = SCHEMA_NAME

    def __init__(
        self,
        domain: Domain,
        material: DomainMaterial,
        signals: Signals,
        settings: TeacherSettings,
        *,
        crisis_fraction: float = DEFAULT_CRISIS_FRACTION,
        crisis_opening: str | None = None,
        journal: TeacherJournal | None = None,
        client: TeacherClient | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.domain = domain
        self.crisis_fraction = crisis_fraction
        self.crisis_opening = crisis_opening
        self.material = material
        self.signals = signals
        self.settings = settings
        self._client = client or open_teacher(settings, transport=http_transport)
        self._journal = journal
        self.usage = TeacherUsage()

    @property
    def malformed(self) -> int:
        return self.usage.malformed

    def _request(self, seed: int, index: int, topic_weights: Mapping[str, float] | None) -> TeacherRequest:
        digest = hashlib.sha256(f"{self.domain.name}:{seed}:{index}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        topics = self.material.topics
        weights = [max((topic_weights or {}).get(t.name, 1.0), 0.01) for t in topics]
        topic = rng.choices(topics, weights=weights)[0]
        situation_index = rng.randrange(len(topic.situations))
        crisis = bool(self.material.crisis) and rng.random() < self.crisis_fraction
        kind = rng.choice(self.material.crisis).kind if crisis else None
        emotion = "distressed" if crisis else rng.choice([e for e in EMOTIONS if e != "distressed"])
        prompt = _INSTRUCTIONS.format(
            role=self.material.role,
            domain=self.domain.name,
            description=self.domain.description,
            topic=topic.name.replace("_", " "),
            emotion=emotion,
            situation=topic.situations[situation_index],
            crisis=_CRISIS.format(kind=kind.replace("_", " ")) if kind else "",
            emotions=", ".join(EMOTIONS),
        )
        system = f"You are MeeTARA, a caring {self.material.role}."
        request_seed = int.from_bytes(digest[8:12], "big")
        split_key = f"{topic.name}:{situation_index}"
        key = self._key(system, prompt, request_seed, self.schema)
        return TeacherRequest(index, system, prompt, request_seed, topic.name, split_key, crisis, key)

    def _key(self, system: str, prompt: str, seed: int, schema: dict[str, Any]) -> str:
        """The journal key of a request: everything that shapes the answer."""
        s = self.settings
        return request_key(
            _identity(s),
            {
                "system": system,
                "prompt": prompt,
                "seed": seed,
                "temperature": s.temperature,
                "max_tokens": s.max_tokens,
                "schema": schema,
            },
        )

    async def generate(
        self,
        seed: int,
        indices: range,
        *,
        topic_weights: Mapping[str, float] | None = None,
        progress: Callable[[int], Awaitable[None]] | None = None,
    ) -> list[ConversationSample | None]:
        """One conversation per index, in index order; ``None`` where the teacher's answer was malformed.

        Up to ``concurrency`` requests run at once. An answer found in the journal is reused, not
        requested; every new answer is journaled as it arrives. Raises ``TeacherUnavailable`` when
        a request gets no answer (the answers so far stay journaled for the next run). A failure
        stops new requests but lets those in flight finish: an answer the endpoint has sent (and
        billed) is journaled, not cancelled and paid for again by the next run.
        """
        requests = [self._request(seed, i, topic_weights) for i in indices]
        answers: dict[int, Completion] = {}
        pending = iter(requests)
        started = time.monotonic()
        retries_before = self._client.retries
        failures: list[TeacherUnavailable] = []
        stop = anyio.Event()

        async def worker() -> None:
            for request in pending:  # workers share one iterator: each request is taken once
                if failures:
                    return
                cached = self._journal.get(request.key) if self._journal else None
                if cached is not None:
                    self.usage.reused += 1
                    answers[request.index] = cached
                else:
                    messages = [
                        {"role": "system", "content": request.system},
                        {"role": "user", "content": request.prompt},
                    ]
                    schema = request.schema or self.schema
                    try:
                        answer = await self._client.complete(
                            messages, schema, name=self.schema_name, seed=request.seed, stop=stop
                        )
                    except TeacherUnavailable as exc:
                        failures.append(exc)  # several workers can meet a dead endpoint at once
                        stop.set()
                        return
                    if self._journal is not None:
                        self._journal.add(request.key, answer)
                    self._paid(answer)
                    answers[request.index] = answer
                if progress is not None:
                    await progress(len(answers))

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(self.settings.concurrency, max(len(requests), 1))):
                    tg.start_soon(worker)
        finally:
            self.usage.retries += self._client.retries - retries_before
            self.usage.seconds = round(self.usage.seconds + time.monotonic() - started, 3)
        if failures:
            raise failures[0]
        return [self._sample(seed, r, answers[r.index].text) for r in requests]

    def _paid(self, answer: Completion) -> None:
        s, u = self.settings, self.usage
        u.requests += 1
        u.prompt_tokens += answer.prompt_tokens
        u.completion_tokens += answer.completion_tokens
        u.usd = round(
            (
                u.prompt_tokens * s.usd_per_million_prompt_tokens
                + u.completion_tokens * s.usd_per_million_completion_tokens
            )
            / 1e6,
            6,
        )

    def _sample(self, seed: int, request: TeacherRequest, text: str) -> ConversationSample | None:
        try:
            out = parse_teacher_output(text)
        except MalformedTeacherOutput as exc:
            self._malformed(request, exc)
            return None
        turns = [out.user, out.assistant]
        if out.followup_user and out.followup_assistant:
            turns += [out.followup_user, out.followup_assistant]
        return self._conversation(f"{self.domain.name}-t{seed}-{request.index:06d}", request, turns, out.emotion)

    def _malformed(self, request: TeacherRequest, problem: Exception) -> None:
        self.usage.malformed += 1
        log.info("malformed teacher answer skipped", domain=self.domain.name, index=request.index, reason=str(problem))

    def _conversation(
        self, sample_id: str, request: TeacherRequest, turns: list[str], emotion: Emotion
    ) -> ConversationSample:
        """The sample from the teacher's turns (user first), labelled from the request and the text."""
        crisis = bool(request.crisis or self.signals.crisis_kind(turns[0]))
        opening = self.crisis_opening
        if crisis and opening and not turns[1].startswith(opening):
            # Every crisis reply the factory trains on opens with the same call for help, whoever
            # wrote the rest: a small model commits to a crisis answer at its first tokens.
            turns = [turns[0], f"{opening} {turns[1]}", *turns[2:]]
        messages = [ChatMessage(role="system", content=request.system)]
        messages += [ChatMessage(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(turns)]
        replies = turns[1::2]
        markers: list[EmpathyMarker] = []
        if self.signals.acknowledges_feeling(replies[0]):
            markers.append("acknowledge_feeling")
        if "?" in replies[0]:
            markers.append("ask_followup")
        if self.signals.points_to_real_help(replies[0]):
            markers.append("crisis_resources")
        return ConversationSample(
            id=sample_id,
            domain=self.domain.name,
            category=self.domain.category,
            messages=messages,
            emotion=emotion,
            empathy_markers=markers,
            crisis=crisis,
            topic=request.topic,
            generator=self.name,
            split_key=request.split_key,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._journal is not None:
            self._journal.close()
