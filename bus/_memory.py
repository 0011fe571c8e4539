"""In-process transport with Redis Streams semantics (groups, pending lists, idle times, trimming).

``memory://NAME`` names a broker shared by every transport opened with that URL in this
process, so an embedded swarm and its clients meet on the same streams.
"""

from __future__ import annotations

import fnmatch
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import anyio

from bus._transport import AutoclaimResult, CompleteResult, Entry, Fields, GroupMissing

__all__ = ["MemoryBroker", "MemoryTransport"]


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass
class _Pending:
    consumer: str
    deliveries: int
    delivered_at_ms: int


@dataclass
class _Group:
    last_delivered: tuple[int, int] = (0, 0)
    pending: dict[str, _Pending] = field(default_factory=dict)


@dataclass
class _Stream:
    entries: dict[str, Fields] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    last: tuple[int, int] = (0, 0)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def after(self, after: tuple[int, int], count: int) -> list[Entry]:
        out = []
        for entry_id, fields in self.entries.items():
            if _parse_id(entry_id) > after:
                out.append(Entry(entry_id, dict(fields)))
                if len(out) >= count:
                    break
        return out


class MemoryBroker:
    """The shared state behind ``memory://NAME``."""

    _registry: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}
        self.keys: dict[str, tuple[bytes, float | None]] = {}

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        return cls._registry.setdefault(name, cls())

    @classmethod
    def drop(cls, name: str) -> None:
        cls._registry.pop(name, None)

    def stream(self, name: str) -> _Stream:
        return self.streams.setdefault(name, _Stream())

    def append(self, name: str, fields: Mapping[bytes, bytes], maxlen: int) -> str:
        stream = self.stream(name)
        ms = max(int(time.time() * 1000), stream.last[0])
        seq = stream.last[1] + 1 if ms == stream.last[0] else 0
        stream.last = (ms, seq)
        entry_id = f"{ms}-{seq}"
        stream.entries[entry_id] = dict(fields)
        excess = len(stream.entries) - maxlen
        if excess > 0:
            # Trimming ignores pending entries, exactly as Redis does.
            for old in list(itertools.islice(stream.entries, excess)):
                del stream.entries[old]
        stream.changed.set()
        stream.changed = anyio.Event()
        return entry_id

    def live_key(self, key: str) -> bytes | None:
        item = self.keys.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self.keys[key]
            return None
        return value


class MemoryTransport:
    """Transport over a ``MemoryBroker``; see ``bus._transport.Transport`` for the contract."""

    def __init__(self, url: str = "memory://default") -> None:
        self.url = url
        self._broker = MemoryBroker.named(url.removeprefix("memory://") or "default")
        self._closed = False

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True

    async def _wait(self, streams: Sequence[str], block_ms: int) -> None:
        """Sleep until one of ``streams`` changes or ``block_ms`` passes."""
        if block_ms <= 0 or self._closed:
            return
        events = [self._broker.stream(s).changed for s in streams]
        with anyio.move_on_after(block_ms / 1000):
            async with anyio.create_task_group() as tg:

                async def wait_one(event: anyio.Event) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                for event in events:
                    tg.start_soon(wait_one, event)

    # -- streams -------------------------------------------------------------------------
    async def add(self, stream: str, fields: Mapping[bytes, bytes], *, maxlen: int) -> str:
        return self._broker.append(stream, fields, maxlen)

    async def ensure_group(self, stream: str, group: str) -> None:
        self._broker.stream(stream).groups.setdefault(group, _Group())

    def _group(self, stream: str, group: str) -> _Group:
        try:
            return self._broker.stream(stream).groups[group]
        except KeyError:
            raise GroupMissing(f"NOGROUP no consumer group {group!r} on {stream!r}") from None

    async def read_group(
        self, stream: str, group: str, consumer: str, *, pending: bool, count: int, block_ms: int
    ) -> list[Entry]:
        state = self._broker.stream(stream)
        grp = self._group(stream, group)
        if pending:
            out = []
            for entry_id, p in sorted(grp.pending.items(), key=lambda kv: _parse_id(kv[0])):
                if p.consumer != consumer:
                    continue
                p.deliveries += 1
                p.delivered_at_ms = _now_ms()
                out.append(Entry(entry_id, dict(state.entries.get(entry_id, {}))))
                if len(out) >= count:
                    break
            return out
        entries = state.after(grp.last_delivered, count)
        if not entries:
            await self._wait([stream], block_ms)
            entries = state.after(grp.last_delivered, count)
        for entry in entries:
            grp.last_delivered = _parse_id(entry.id)
            grp.pending[entry.id] = _Pending(consumer, 1, _now_ms())
        return entries

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        grp = self._broker.stream(stream).groups.get(group)
        if grp is None:
            return 0
        return sum(grp.pending.pop(i, None) is not None for i in ids)

    async def pending_count(self, stream: str, group: str) -> int:
        grp = self._broker.stream(stream).groups.get(group)
        return 0 if grp is None else len(grp.pending)

    async def delivery_counts(self, stream: str, group: str, ids: Sequence[str]) -> dict[str, int]:
        grp = self._group(stream, group)
        return {i: grp.pending[i].deliveries for i in ids if i in grp.pending}

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
        state = self._broker.stream(stream)
        grp = self._group(stream, group)
        begin = _parse_id(start)
        now = _now_ms()
        for entry_id in keep:
            kept = grp.pending.get(entry_id)
            if kept is not None and kept.consumer == consumer:
                kept.delivered_at_ms = now
        claimed: list[Entry] = []
        deleted: list[str] = []
        scanned = 0
        ordered = sorted((i for i in grp.pending if _parse_id(i) >= begin), key=_parse_id)
        next_start = "0-0"
        for entry_id in ordered:
            if scanned >= count:
                next_start = entry_id
                break
            scanned += 1
            p = grp.pending[entry_id]
            if now - p.delivered_at_ms < min_idle_ms:
                continue
            if entry_id not in state.entries:
                del grp.pending[entry_id]
                deleted.append(entry_id)
                continue
            p.consumer, p.deliveries, p.delivered_at_ms = consumer, p.deliveries + 1, now
            claimed.append(Entry(entry_id, dict(state.entries[entry_id])))
        return AutoclaimResult(next_start, claimed, deleted)

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str], *, idle_ms: int = 0) -> list[str]:
        grp = self._group(stream, group)
        owned = []
        for entry_id in ids:
            p = grp.pending.get(entry_id)
            if p is not None and p.consumer == consumer:
                p.delivered_at_ms = _now_ms() - idle_ms
                owned.append(entry_id)
        return owned

    async def read(self, streams: Mapping[str, str], *, count: int, block_ms: int) -> list[tuple[str, Entry]]:
        def collect() -> list[tuple[str, Entry]]:
            return [
                (name, entry)
                for name, after in streams.items()
                for entry in self._broker.stream(name).after(_parse_id(after), count)
            ]

        found = collect()
        if not found:
            await self._wait(list(streams), block_ms)
            found = collect()
        return found

    async def range(self, stream: str, *, start: str = "-", end: str = "+", count: int | None = None) -> list[Entry]:
        lo = (0, 0) if start == "-" else _parse_id(start)
        hi = None if end == "+" else _parse_id(end)
        out = []
        for entry_id, fields in self._broker.stream(stream).entries.items():
            key = _parse_id(entry_id)
            if key >= lo and (hi is None or key <= hi):
                out.append(Entry(entry_id, dict(fields)))
                if count is not None and len(out) >= count:
                    break
        return out

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        entries = self._broker.stream(stream).entries
        return sum(entries.pop(i, None) is not None for i in ids)

    async def length(self, stream: str) -> int:
        return len(self._broker.stream(stream).entries)

    async def last_id(self, stream: str) -> str:
        entries = self._broker.stream(stream).entries
        return next(reversed(entries), "0-0") if entries else "0-0"

    # -- atomic compounds (no await between steps, so atomic on one event loop) ----------
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
        existing = self._broker.live_key(result_key)
        if existing is None:
            self._set(result_key, result, result_ttl_ms, nx=False)
            self._broker.append(reply_stream, reply, reply_maxlen)
        self._ack_now(stream, group, entry_id)
        return CompleteResult(stored=existing is None, existing=existing)

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
        if reply_stream is not None and reply is not None:
            self._broker.append(reply_stream, reply, reply_maxlen)
        self._ack_now(stream, group, entry_id)

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
        letter_id = self._broker.append(dlq_stream, letter, dlq_maxlen)
        if reply_stream is not None and reply is not None:
            self._broker.append(reply_stream, reply, reply_maxlen)
        self._ack_now(stream, group, entry_id)
        return letter_id

    async def move(self, src: str, entry_id: str, dst: str, fields: Mapping[bytes, bytes], *, maxlen: int) -> str:
        new_id = self._broker.append(dst, fields, maxlen)
        self._broker.stream(src).entries.pop(entry_id, None)
        return new_id

    def _ack_now(self, stream: str, group: str, entry_id: str) -> None:
        grp = self._broker.stream(stream).groups.get(group)
        if grp is not None:
            grp.pending.pop(entry_id, None)

    # -- keys ----------------------------------------------------------------------------
    def _set(self, key: str, value: bytes, ttl_ms: int | None, *, nx: bool) -> bool:
        if nx and self._broker.live_key(key) is not None:
            return False
        expires = time.monotonic() + ttl_ms / 1000 if ttl_ms else None
        self._broker.keys[key] = (bytes(value), expires)
        return True

    async def get(self, key: str) -> bytes | None:
        return self._broker.live_key(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._broker.live_key(k) for k in keys]

    async def set(self, key: str, value: bytes, *, ttl_ms: int | None = None, nx: bool = False) -> bool:
        return self._set(key, value, ttl_ms, nx=nx)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes | None, *, ttl_ms: int | None = None
    ) -> bool:
        if self._broker.live_key(key) != expected:
            return False
        if value is None:
            self._broker.keys.pop(key, None)
            return True
        return self._set(key, value, ttl_ms, nx=False)

    async def delete(self, keys: Sequence[str]) -> int:
        deleted = 0
        for key in keys:
            if self._broker.live_key(key) is not None:
                deleted += 1
            self._broker.keys.pop(key, None)
            if self._broker.streams.pop(key, None) is not None:
                deleted += 1
        return deleted

    async def scan(self, pattern: str) -> list[str]:
        names = [k for k in list(self._broker.keys) if self._broker.live_key(k) is not None]
        names += list(self._broker.streams)
        return sorted(k for k in set(names) if fnmatch.fnmatchcase(k, pattern))
