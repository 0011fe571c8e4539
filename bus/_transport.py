"""The transport interface: the stream and key-value primitives every backend provides.

Delivery semantics (at-least-once, reclaim, dead letters, request/reply) are written once in
``bus._bus`` / ``bus._consumer`` on top of these primitives, so the Redis and memory backends
cannot drift apart; the contract suite runs the same tests against both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["AutoclaimResult", "CompleteResult", "Entry", "Fields", "GroupMissing", "Transport"]


class GroupMissing(LookupError):
    """The consumer group is gone (e.g. Redis restarted without persistence); recreate it."""


Fields = dict[bytes, bytes]
"""Raw stream-entry fields as stored (binary-safe)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry."""

    id: str
    fields: Fields


@dataclass(frozen=True, slots=True)
class AutoclaimResult:
    """What an XAUTOCLAIM pass returned."""

    next_start: str
    """Cursor for the next pass; ``0-0`` when the scan wrapped around."""
    entries: list[Entry]
    """Entries now owned by the claiming consumer (delivery count incremented)."""
    deleted: list[str]
    """Pending ids whose entries were trimmed away; dropped from the pending list."""


@dataclass(frozen=True, slots=True)
class CompleteResult:
    """Outcome of storing a request's result."""

    stored: bool
    """True when this call stored the result and published the reply."""
    existing: bytes | None
    """The result stored earlier by someone else, when ``stored`` is false."""


@runtime_checkable
class Transport(Protocol):
    """Stream and key primitives. Keys are full keys: namespacing is the caller's job."""

    url: str
    """The URL this transport was opened with, credentials redacted."""

    async def ping(self) -> None:
        """Raise ``Unavailable`` when the backend cannot be reached."""

    async def close(self) -> None:
        """Release connections; blocked readers return."""

    # -- streams -------------------------------------------------------------------------
    async def add(self, stream: str, fields: Mapping[bytes, bytes], *, maxlen: int) -> str:
        """Append an entry, trimming the stream to about ``maxlen`` entries."""

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create the consumer group (reading from the start) and the stream if missing."""

    async def read_group(
        self, stream: str, group: str, consumer: str, *, pending: bool, count: int, block_ms: int
    ) -> list[Entry]:
        """XREADGROUP: new entries (``pending=False``) or this consumer's own pending ones."""

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; returns how many were pending."""

    async def pending_count(self, stream: str, group: str) -> int:
        """Entries delivered to the group and not yet acked (0 for a missing group)."""

    async def delivery_counts(self, stream: str, group: str, ids: Sequence[str]) -> dict[str, int]:
        """Delivery counts of pending entries (absent ids are not pending)."""

    async def autoclaim(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int,
        start: str,
        count: int,
        keep: Sequence[str] = (),
    ) -> AutoclaimResult:
        """Take over entries idle for at least ``min_idle_ms`` from any consumer.

        ``keep``: entries ``consumer`` still works on; those it owns are made fresh (idle 0) in the
        same atomic step first, so they are never claimed, however late the pass runs.
        """

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str], *, idle_ms: int = 0) -> list[str]:
        """Set the idle time of entries still owned by ``consumer``; returns the ids it owns.

        ``idle_ms=0`` is a heartbeat; a large value releases entries for immediate reclaim.
        Ownership is checked atomically, so an entry claimed by another consumer is left alone.
        """

    async def read(self, streams: Mapping[str, str], *, count: int, block_ms: int) -> list[tuple[str, Entry]]:
        """XREAD (no group) after the given ids."""

    async def range(self, stream: str, *, start: str = "-", end: str = "+", count: int | None = None) -> list[Entry]:
        """XRANGE."""

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        """XDEL."""

    async def length(self, stream: str) -> int:
        """XLEN (0 for a missing stream)."""

    async def last_id(self, stream: str) -> str:
        """Id of the newest entry, ``0-0`` for an empty or missing stream."""

    # -- atomic compounds ----------------------------------------------------------------
    async def complete(
        self,
        stream: str,
        group: str,
        entry_id: str,
        *,
        result_key: str,
        result: bytes,
        result_ttl_ms: int,
        reply_stream: str,
        reply: Mapping[bytes, bytes],
        reply_maxlen: int,
        reply_ttl_ms: int,
    ) -> CompleteResult:
        """Atomically: store ``result`` if the key is free, and only then publish the reply; ack.

        Two consumers finishing the same request race here; exactly one reply goes out.
        """

    async def reply_and_ack(
        self,
        stream: str,
        group: str,
        entry_id: str,
        *,
        reply_stream: str | None,
        reply: Mapping[bytes, bytes] | None,
        reply_maxlen: int,
        reply_ttl_ms: int,
    ) -> None:
        """Atomically publish a reply (if any) and ack the entry."""

    async def dead_letter(
        self,
        stream: str,
        group: str,
        entry_id: str,
        *,
        dlq_stream: str,
        letter: Mapping[bytes, bytes],
        dlq_maxlen: int,
        reply_stream: str | None,
        reply: Mapping[bytes, bytes] | None,
        reply_maxlen: int,
        reply_ttl_ms: int,
    ) -> str:
        """Atomically write the dead letter (and an error reply), then ack the original."""

    async def move(self, src: str, entry_id: str, dst: str, fields: Mapping[bytes, bytes], *, maxlen: int) -> str:
        """Atomically append ``fields`` to ``dst`` and delete ``entry_id`` from ``src``."""

    # -- keys ----------------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        """GET."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """MGET."""

    async def set(self, key: str, value: bytes, *, ttl_ms: int | None = None, nx: bool = False) -> bool:
        """SET with optional expiry; with ``nx`` only when absent. Returns whether it was set."""

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes | None, *, ttl_ms: int | None = None
    ) -> bool:
        """Atomically: if the key holds ``expected`` (``None``: is absent), set it to ``value``
        (``None``: delete it). Returns whether it matched. Leases renew and release with it."""

    async def delete(self, keys: Sequence[str]) -> int:
        """DEL."""

    async def scan(self, pattern: str) -> list[str]:
        """Keys matching a glob pattern (SCAN, never KEYS)."""
