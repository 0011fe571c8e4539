"""Replies of a deployed model through llama.cpp, streamed as they are generated.

The model is kept loaded between requests (the last one asked), so a conversation pays its load
once. The chat template is the GGUF's own: a merged MeeTARA model's sends the system prompt it was
trained under when the conversation brings none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.quality_assurance.model_checks import GenerationSettings
from protocol import InvalidParams

__all__ = ["ChatModel"]

_N_CTX = 4096


_TURN_OVERHEAD = 8
"""Tokens a turn's markup adds around its content (role header, end of turn), a generous count."""


def _fitting(llm: Any, messages: list[dict[str, str]], budget: int) -> list[dict[str, str]]:
    """``messages`` without the oldest turns that do not fit in ``budget`` tokens (the last one always stays)."""

    def tokens(m: dict[str, str]) -> int:
        return len(llm.tokenize(m["content"].encode(), add_bos=False, special=False)) + _TURN_OVERHEAD

    kept: list[dict[str, str]] = []
    used = 0
    for message in reversed(messages):
        used += tokens(message)
        if kept and used > budget:
            break
        kept.append(message)
    if kept[-1]["role"] == "assistant":  # a conversation opens with the user
        kept.pop()
    return kept[::-1]


class ChatModel:
    """One loaded GGUF at a time; one reply at a time (llama.cpp's context is not shared)."""

    def __init__(self, threads: int | None) -> None:
        self._threads = threads
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._llm: Any = None

    def _load(self, path: Path) -> Any:
        from llama_cpp import Llama

        if self._path != path:
            self._llm = self._path = None  # the previous model's memory goes before the next one loads
            try:
                self._llm = Llama(model_path=str(path), n_ctx=_N_CTX, n_threads=self._threads, verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                raise InvalidParams(f"llama.cpp could not load {path.name}: {exc}") from exc
            self._path = path
        return self._llm

    def reply(
        self,
        path: Path,
        messages: list[dict[str, str]],
        sampling: GenerationSettings,
        max_tokens: int,
        on_text: Callable[[str], None],
    ) -> tuple[str, int]:
        """The model's reply to ``messages`` and its token count; ``on_text`` gets each piece as it comes."""
        with self._lock:
            llm = self._load(path)
            stream = llm.create_chat_completion(
                messages=_fitting(llm, messages, _N_CTX - max_tokens),
                stream=True,
                max_tokens=max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                min_p=sampling.min_p,
                repeat_penalty=sampling.repeat_penalty,
            )
            pieces: list[str] = []
            for chunk in stream:
                text = chunk["choices"][0]["delta"].get("content")
                if text:
                    pieces.append(text)
                    on_text(text)
            return "".join(pieces), len(pieces)
