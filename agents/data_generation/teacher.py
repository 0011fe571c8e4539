"""The teacher-LLM generator: a language model writes each conversation in our schema.

Backends: a GGUF file through llama-cpp-python, or any OpenAI-compatible chat endpoint
(llama-server, vLLM, Ollama, hosted APIs). The prompt carries the domain, a topic and a
situation from the domain's material as grounding; the reply must be one JSON object, and
anything else is rejected (the sample is skipped and counted), never patched up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.data_generation.material import DomainMaterial
from agents.text.signals import Signals
from protocol.agents.data_generation import DEFAULT_CRISIS_FRACTION, TeacherSettings
from protocol.datasets import EMOTIONS, ChatMessage, ConversationSample, EmpathyMarker
from runtime import Domain

__all__ = ["MalformedTeacherOutput", "TeacherGenerator", "parse_teacher_output", "teacher_requirement"]

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

_INSTRUCTIONS = """You write one realistic training conversation between a user and MeeTARA, an \
empathetic {role}. Domain: {domain} ({description}). Topic: {topic}. The user is feeling {emotion}. \
Ground the conversation in this situation: "{situation}"
{crisis}
Reply with ONE JSON object and nothing else, with exactly these keys:
  "user": the user's first message (first person, 15-80 words),
  "assistant": MeeTARA's reply (40-180 words): acknowledge the feeling, give concrete safe advice, \
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


class _TeacherOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=10, max_length=2000)
    assistant: str = Field(min_length=20, max_length=4000)
    followup_user: str | None = Field(default=None, max_length=2000)
    followup_assistant: str | None = Field(default=None, max_length=4000)
    emotion: str


def parse_teacher_output(text: str) -> _TeacherOutput:
    """The conversation object in a completion; raises ``MalformedTeacherOutput`` otherwise."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        raise MalformedTeacherOutput("no JSON object in the completion")
    try:
        raw = json.loads(match.group(0))
    except ValueError as exc:
        raise MalformedTeacherOutput(f"invalid JSON: {exc}") from None
    try:
        out = _TeacherOutput.model_validate(raw)
    except ValidationError as exc:
        raise MalformedTeacherOutput(f"wrong shape: {exc.errors(include_input=False)[0]['msg']}") from None
    if out.emotion not in EMOTIONS:
        raise MalformedTeacherOutput(f"unknown emotion {out.emotion!r}")
    if (out.followup_user is None) != (out.followup_assistant is None):
        raise MalformedTeacherOutput("followup_user and followup_assistant must both be set or both null")
    return out


def teacher_requirement(settings: TeacherSettings | None) -> str | None:
    """Why the teacher cannot run with these settings (``None`` when it can)."""
    has_llama = importlib.util.find_spec("llama_cpp") is not None
    has_http = importlib.util.find_spec("httpx") is not None
    if settings is None:
        if not (has_llama or has_http):
            return "install httpx (for an endpoint) or llama-cpp-python (for a GGUF file)"
        return None
    if settings.gguf_path and settings.base_url:
        return "give either teacher.gguf_path or teacher.base_url, not both"
    if settings.gguf_path:
        if not Path(settings.gguf_path).is_file():
            return f"teacher model file not found: {settings.gguf_path}"
        if not has_llama:
            return "a GGUF teacher needs llama-cpp-python (pip install llama-cpp-python)"
        return None
    if settings.base_url:
        if not has_http:
            return "an endpoint teacher needs httpx (pip install httpx)"
        if settings.api_key_env and settings.api_key_env not in os.environ:
            return f"environment variable {settings.api_key_env} (the teacher API key) is not set"
        return None
    return "set teacher.gguf_path or teacher.base_url"


class _Completer(Protocol):
    def complete(self, system: str, prompt: str, *, seed: int) -> str: ...


class _HttpCompleter:
    def __init__(self, settings: TeacherSettings, transport: Any = None) -> None:
        import httpx

        assert settings.base_url is not None
        headers = {}
        if settings.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[settings.api_key_env]}"
        self._client = httpx.Client(
            base_url=settings.base_url.rstrip("/"), headers=headers, timeout=120.0, transport=transport
        )
        self._settings = settings

    def complete(self, system: str, prompt: str, *, seed: int) -> str:
        import httpx

        body = {
            "model": self._settings.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "temperature": self._settings.temperature,
            "max_tokens": self._settings.max_tokens,
            "seed": seed,
            "response_format": {"type": "json_object"},
        }
        try:
            response = self._client.post("/chat/completions", json=body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise MalformedTeacherOutput(f"teacher endpoint failed: {exc}") from None


class _LlamaCompleter:
    def __init__(self, settings: TeacherSettings) -> None:
        from llama_cpp import Llama

        assert settings.gguf_path is not None
        self._llm = Llama(model_path=settings.gguf_path, n_ctx=2048, verbose=False)
        self._settings = settings

    def complete(self, system: str, prompt: str, *, seed: int) -> str:
        result: Any = self._llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            temperature=self._settings.temperature,
            max_tokens=self._settings.max_tokens,
            seed=seed,
            response_format={"type": "json_object"},
        )
        return str(result["choices"][0]["message"]["content"])


class TeacherGenerator:
    """Asks a teacher LLM for each conversation."""

    name = "teacher"

    def __init__(
        self,
        domain: Domain,
        material: DomainMaterial,
        signals: Signals,
        settings: TeacherSettings,
        *,
        crisis_fraction: float = DEFAULT_CRISIS_FRACTION,
        http_transport: Any = None,
    ) -> None:
        self.domain = domain
        self.crisis_fraction = crisis_fraction
        self.material = material
        self.signals = signals
        self._completer: _Completer = (
            _LlamaCompleter(settings) if settings.gguf_path else _HttpCompleter(settings, http_transport)
        )
        self.malformed = 0

    def sample(
        self, seed: int, index: int, *, topic_weights: Mapping[str, float] | None = None
    ) -> ConversationSample | None:
        """One conversation, or ``None`` when the teacher's output was malformed (counted)."""
        digest = hashlib.sha256(f"{self.domain.name}:{seed}:{index}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        topics = self.material.topics
        weights = [max((topic_weights or {}).get(t.name, 1.0), 0.01) for t in topics]
        topic = rng.choices(topics, weights=weights)[0]
        situation_index = rng.randrange(len(topic.situations))
        crisis = self.material.crisis and rng.random() < self.crisis_fraction
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
        try:
            out = parse_teacher_output(
                self._completer.complete(system, prompt, seed=int.from_bytes(digest[8:12], "big"))
            )
        except MalformedTeacherOutput:
            self.malformed += 1
            return None
        messages = [
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=out.user),
            ChatMessage(role="assistant", content=out.assistant),
        ]
        if out.followup_user and out.followup_assistant:
            messages += [
                ChatMessage(role="user", content=out.followup_user),
                ChatMessage(role="assistant", content=out.followup_assistant),
            ]
        detected = self.signals.crisis_kind(out.user)
        markers: list[EmpathyMarker] = []
        if self.signals.acknowledges_feeling(out.assistant):
            markers.append("acknowledge_feeling")
        if "?" in out.assistant:
            markers.append("ask_followup")
        if self.signals.points_to_real_help(out.assistant):
            markers.append("crisis_resources")
        return ConversationSample(
            id=f"{self.domain.name}-t{seed}-{index:06d}",
            domain=self.domain.name,
            category=self.domain.category,
            messages=messages,
            emotion=out.emotion,
            empathy_markers=markers,
            crisis=bool(crisis or detected),
            topic=topic.name,
            generator=self.name,
            split_key=f"{topic.name}:{situation_index}",
        )
