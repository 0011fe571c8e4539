"""Calling a teacher LLM: an OpenAI-compatible endpoint over HTTP, or a GGUF file in process.

Both constrain the completion to a JSON schema (structured output: an endpoint's
``response_format`` of type ``json_schema``, llama-cpp-python's grammar built from the schema), so
even a small teacher answers with an object of the right shape, and both report the tokens used.
The HTTP client bounds its request rate and retries transient failures (429, 5xx, timeouts,
connection errors) with exponential backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread
import httpx
import structlog

from protocol.agents.data_generation import TeacherSettings

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = [
    "Completion",
    "GgufTeacher",
    "HttpTeacher",
    "RateLimiter",
    "TeacherClient",
    "TeacherUnavailable",
    "list_models",
    "open_teacher",
]

log = structlog.get_logger("meetara.data_generation.teacher")

Messages = list[dict[str, str]]

_MAX_RETRY_AFTER_S = 600.0
"""A server asking for a longer pause than this is treated as down: the call fails and is retried later."""


@dataclass(frozen=True, slots=True)
class Completion:
    """One answered request: the text, and the tokens the endpoint says it used."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class TeacherUnavailable(Exception):
    """A request got no answer: retries spent on transient failures, or a permanent HTTP error."""


class TeacherClient(Protocol):
    retries: int
    """Requests repeated after transient failures, so far."""

    async def complete(
        self, messages: Messages, schema: dict[str, Any], *, name: str, seed: int, stop: anyio.Event | None = None
    ) -> Completion:
        """One answer. ``stop`` set (a sibling request failed): send nothing more, retry nothing, raise
        ``TeacherUnavailable``; a request already sent is still awaited, since its answer is paid for."""
        ...

    async def aclose(self) -> None: ...


class RateLimiter:
    """Spaces request starts evenly so that at most ``per_minute`` start in any minute."""

    def __init__(self, per_minute: float | None) -> None:
        self._interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        # No await between reading and moving the slot: one event loop, so no lock is needed.
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self._interval
        if start > now:
            await anyio.sleep(start - now)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _refuses_json_schema(response: httpx.Response) -> bool:
    """Whether an endpoint refused the ``json_schema`` response format itself (not the request's content)."""
    # llama-cpp-python's server answers such a request with a 500 naming the field; others 400 or 422.
    if response.status_code not in (400, 422, 500):
        return False
    return "response_format" in response.text and "json_schema" in response.text


def _usage(payload: dict[str, Any]) -> tuple[int, int]:
    usage = payload.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _text(payload: dict[str, Any]) -> str:
    """The completion's text; an answer without one is an empty text (then rejected as malformed)."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


class HttpTeacher:
    """An OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        settings: TeacherSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        if settings.base_url is None:
            raise ValueError("an endpoint teacher needs base_url")
        self._settings = settings
        self._client = _http_client(settings, transport)
        self._rate = RateLimiter(settings.requests_per_minute)
        self._backoff_s, self._max_backoff_s = backoff_s, max_backoff_s
        self.retries = 0
        self._schema_format = "json_schema"
        """OpenAI's ``json_schema`` format; ``json_object`` with a ``schema`` where an endpoint only knows that
        (llama-cpp-python's own server), chosen after the endpoint refused the first."""

    def _response_format(self, schema: dict[str, Any], name: str) -> dict[str, Any]:
        if self._schema_format == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}

    async def complete(
        self, messages: Messages, schema: dict[str, Any], *, name: str, seed: int, stop: anyio.Event | None = None
    ) -> Completion:
        s = self._settings
        body = {
            "model": s.model,
            "messages": messages,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "seed": seed,
        }
        attempt = 0
        while True:
            sent_format = self._schema_format
            body["response_format"] = self._response_format(schema, name)
            await self._rate.wait()
            if stop is not None and stop.is_set():
                raise TeacherUnavailable("not sent: another request to the teacher failed")
            wait: float | None = None
            try:
                response = await self._client.post("/chat/completions", json=body)
            except httpx.TransportError as exc:  # connection refused or reset, timeouts, broken responses
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if sent_format == "json_schema" and _refuses_json_schema(response):
                    if self._schema_format == "json_schema":
                        log.info("teacher endpoint has no json_schema format; using json_object with a schema")
                    self._schema_format = "json_object"
                    continue
                if response.status_code == 429 or response.status_code >= 500:
                    problem, wait = f"HTTP {response.status_code}: {response.text[:200]}", _retry_after(response)
                elif response.is_error:  # 4xx: the request itself is wrong; repeating it cannot help
                    raise TeacherUnavailable(
                        f"teacher endpoint refused the request: HTTP {response.status_code}: {response.text[:300]}"
                    )
                else:
                    try:
                        payload = response.json()
                    except ValueError:
                        payload = {}
                    prompt_tokens, completion_tokens = _usage(payload if isinstance(payload, dict) else {})
                    text = _text(payload) if isinstance(payload, dict) else ""
                    return Completion(text, prompt_tokens, completion_tokens)
            if attempt >= s.max_retries or (wait is not None and wait > _MAX_RETRY_AFTER_S):
                raise TeacherUnavailable(f"teacher endpoint failed after {attempt + 1} attempt(s): {problem}")
            if wait is None:  # full jitter, so that parallel requests do not retry in lockstep
                wait = random.uniform(0.5, 1.0) * min(self._backoff_s * 2**attempt, self._max_backoff_s)
            attempt += 1
            self.retries += 1
            log.warning("teacher request failed; retrying", problem=problem, attempt=attempt, retry_in_s=round(wait, 2))
            if stop is None:
                await anyio.sleep(wait)
                continue
            with anyio.move_on_after(wait):
                await stop.wait()
            if stop.is_set():
                raise TeacherUnavailable(f"gave up retrying ({problem}): another request to the teacher failed")

    async def aclose(self) -> None:
        await self._client.aclose()


class GgufTeacher:
    """A GGUF file through llama-cpp-python, one completion at a time (a context is not thread-safe)."""

    def __init__(self, settings: TeacherSettings) -> None:
        from llama_cpp import Llama

        if settings.gguf_path is None:
            raise ValueError("a GGUF teacher needs gguf_path")
        self._settings = settings
        self._llm: Llama = Llama(model_path=settings.gguf_path, n_ctx=4096, verbose=False)
        self._lock = anyio.Lock()
        self.retries = 0

    async def complete(
        self, messages: Messages, schema: dict[str, Any], *, name: str, seed: int, stop: anyio.Event | None = None
    ) -> Completion:
        s = self._settings

        def run() -> Any:
            # llama-cpp-python turns a json_object format with a schema into a grammar for the sampler.
            return self._llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                temperature=s.temperature,
                max_tokens=s.max_tokens,
                seed=seed,
                response_format={"type": "json_object", "schema": schema},
            )

        async with self._lock:
            payload = await anyio.to_thread.run_sync(run)
        prompt_tokens, completion_tokens = _usage(payload)
        return Completion(_text(payload), prompt_tokens, completion_tokens)

    async def aclose(self) -> None:
        self._llm.close()


def _http_client(settings: TeacherSettings, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    assert settings.base_url is not None
    headers = {}
    if settings.api_key_env:
        headers["Authorization"] = f"Bearer {os.environ[settings.api_key_env]}"
    return httpx.AsyncClient(
        base_url=settings.base_url.rstrip("/"),
        headers=headers,
        timeout=settings.timeout_s,
        transport=transport,
        limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency),
    )


def open_teacher(settings: TeacherSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> TeacherClient:
    """The client for these settings (a GGUF file or an endpoint)."""
    if settings.gguf_path:
        return GgufTeacher(settings)
    return HttpTeacher(settings, transport=transport)


async def list_models(
    settings: TeacherSettings, *, timeout_s: float = 20.0, transport: httpx.AsyncBaseTransport | None = None
) -> list[str] | None:
    """The models an endpoint lists at ``/models``; ``None`` when it has no such listing.

    Raises ``TeacherUnavailable`` when the endpoint cannot be reached or refuses the key.
    """
    client = _http_client(settings.model_copy(update={"timeout_s": timeout_s}), transport)
    async with client:
        try:
            response = await client.get("/models")
        except httpx.TransportError as exc:
            raise TeacherUnavailable(f"teacher endpoint {settings.base_url} is not reachable: {exc}") from None
    if response.status_code in (401, 403):
        status = response.status_code
        raise TeacherUnavailable(f"teacher endpoint {settings.base_url} refused the API key (HTTP {status})")
    if response.status_code == 404:
        return None
    if response.is_error:
        raise TeacherUnavailable(f"teacher endpoint {settings.base_url} answered HTTP {response.status_code}")
    try:
        data = response.json().get("data") or []
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError):
        raise TeacherUnavailable(f"{settings.base_url}/models is not an OpenAI-compatible model list") from None
