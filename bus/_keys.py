"""Key and stream names, all under one namespace so deployments and tests never collide."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Keys"]

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every Redis key the bus uses from a namespace."""

    namespace: str

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ValueError(f"invalid bus namespace {self.namespace!r}: use 1-64 letters, digits, '_', '.', '-'")

    def stream(self, logical: str) -> str:
        """Full key of a logical stream name such as ``reply:abc`` (as carried in ``reply_to``)."""
        return f"{self.namespace}:{logical}"

    def inbox(self, agent: str) -> str:
        return self.stream(f"inbox:{agent}")

    @staticmethod
    def reply_logical(client_id: str) -> str:
        return f"reply:{client_id}"

    @property
    def events(self) -> str:
        return self.stream("events")

    @property
    def dead_letters(self) -> str:
        return self.stream("dlq")

    def result(self, agent: str, key: str) -> str:
        return self.stream(f"result:{agent}:{key}")

    def cancel(self, agent: str, key: str) -> str:
        return self.stream(f"cancel:{agent}:{key}")

    def presence(self, member: str) -> str:
        return self.stream(f"presence:{member}")

    @property
    def presence_pattern(self) -> str:
        return self.stream("presence:*")
