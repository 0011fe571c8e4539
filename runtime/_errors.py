"""The error a tool raises for an expected failure; its own module so the artifact store and the
agent base class can both raise it without importing each other."""

from __future__ import annotations

from typing import Any

from protocol import MeetaraError

__all__ = ["ToolError"]


class ToolError(MeetaraError):
    """An expected failure of a tool (bad domain for this step, budget refused…).

    Reported to the caller as a result with ``isError`` set, so an LLM client can read it.
    """

    def __init__(self, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}
