"""Transport over Redis Streams (Redis >= 7.0)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import structlog
from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline

from bus._redis._connection import (
    MAX_BLOCK_MS,
    SENTINEL_SCHEMES,
    BlockingPool,
    close_client,
    open_client,
    redact_url,
    translate_errors,
)
from bus._redis._scripts import COMPARE_AND_SET, COMPLETE, RECLAIM, TOUCH
from bus._transport import AutoclaimResult, CompleteResult, Entry

__all__ = ["RedisTransport"]

log = structlog.get_logger("bus.redis")

REPLICA_WAIT_MS = 2_000
"""How long a write waits for a replica's acknowledgement behind Sentinel before going on without it."""
REPLICA_CHECK_S = 5.0
"""How often a Sentinel transport asks the primary how many replicas it has."""
REPLICA_MAX_LAG_S = 1
"""A replica whose last acknowledgement is older than this is not waited for."""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(raw: Any) -> Entry:
    entry_id, fields = raw
    return Entry(_s(entry_id), dict(fields or {}))


def _flat(fields: Mapping[bytes, bytes]) -> list[bytes]:
    return [part for pair in fields.items() for part in pair]


def _fields(fields: Mapping[bytes, bytes]) -> Any:
    """Stream fields as redis-py's (narrowly typed) commands take them."""
    return dict(fields)


def _ids(streams: Mapping[str, str]) -> Any:
    return dict(streams)


class RedisTransport:
    """Transport over one Redis server; see ``bus._transport.Transport`` for the contract."""

    def __init__(self, url: str) -> None:
        self._raw_url = url
        self.url = redact_url(url)
        self._client = open_client(url)
        self._blocking = BlockingPool(url)
        # Behind Sentinel a failover promotes a replica, and writes the old primary acknowledged but
        # had not yet replicated are gone. Messages (XADD), records (SET, compare-and-set) and
        # completions (stored result + reply + ack) are written with WAIT, so what a caller was told
        # is written is on a replica too: a job's submission and its record survive, and a request
        # that finished is not delivered again to run a second time. Acks without a result (events,
        # dead letters) are not waited for: one lost is a repeated notification, not repeated work.
        self._sentinel = urlsplit(url).scheme in SENTINEL_SCHEMES
        self._replicas = 1  # until the primary says otherwise: a primary alone is reported once
        self._replicas_checked = -REPLICA_CHECK_S
        self._touch = self._client.register_script(TOUCH)
        self._reclaim = self._client.register_script(RECLAIM)
        self._complete = self._client.register_script(COMPLETE)
        self._compare_and_set = self._client.register_script(COMPARE_AND_SET)

    async def ping(self) -> None:
        with translate_errors(self._raw_url):
            await self._client.ping()

    async def close(self) -> None:
        await self._blocking.close()
        await close_client(self._client)

    # -- streams -------------------------------------------------------------------------
    async def _replicas_to_wait_for(self) -> int:
        """1 while the primary has a replica online that acknowledged within the last second (looked
        up every few seconds and after any write it failed to acknowledge), else 0. A primary left
        alone after a failover, or with a frozen replica, takes writes at full speed instead of
        waiting out every one (lease refreshes among them)."""
        now = time.monotonic()
        if now - self._replicas_checked >= REPLICA_CHECK_S:
            info = await self._client.info("replication")
            healthy = [
                value
                for key, value in info.items()
                if key.startswith("slave")
                and isinstance(value, dict)
                and value.get("state") == "online"
                and int(value.get("lag", REPLICA_MAX_LAG_S + 1)) <= REPLICA_MAX_LAG_S
            ]
            had, self._replicas = self._replicas, min(len(healthy), 1)
            self._replicas_checked = now
            if had and not self._replicas:  # once per loss, not at every look
                log.warning("the Redis primary has no healthy replica: writes are not replicated", url=self.url)
        return self._replicas

    async def _replicated(self, write: Callable[[Any], Any]) -> Any:
        """``write(client)``'s result; behind Sentinel, once a replica has it too (or the wait ran out)."""
        if not self._sentinel or not (replicas := await self._replicas_to_wait_for()):
            return await write(self._client)
        pipe: Pipeline
        async with self._client.pipeline(transaction=False) as pipe:  # WAIT counts this connection's writes
            await write(pipe)  # queues the command (a script call needs awaiting to be queued)
            pipe.wait(replicas, REPLICA_WAIT_MS)
            result, acknowledged = await pipe.execute()
        if acknowledged < replicas:
            self._replicas_checked = -REPLICA_CHECK_S  # look again before the next write
            log.warning("write not acknowledged by a replica", waited_ms=REPLICA_WAIT_MS, url=self.url)
        return result

    async def add(self, stream: str, fields: Mapping[bytes, bytes], *, maxlen: int) -> str:
        with translate_errors(self._raw_url):
            return _s(
                await self._replicated(lambda c: c.xadd(stream, _fields(fields), maxlen=maxlen, approximate=True))
            )

    async def ensure_group(self, stream: str, group: str) -> None:
        with translate_errors(self._raw_url):
            try:
                # Created at "0" so entries sent before the first consumer started are served;
                # reads use ">" or "0" independently of this creation id.
                await self._client.xgroup_create(stream, group, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_group(
        self, stream: str, group: str, consumer: str, *, pending: bool, count: int, block_ms: int
    ) -> list[Entry]:
        streams = _ids({stream: "0" if pending else ">"})
        with translate_errors(self._raw_url):
            if pending or block_ms <= 0:
                reply = await self._client.xreadgroup(group, consumer, streams, count=count)
            else:
                async with self._blocking.lease() as client:
                    reply = await client.xreadgroup(
                        group, consumer, streams, count=count, block=min(block_ms, MAX_BLOCK_MS)
                    )
        rows: Any = reply or []
        return [_entry(raw) for _, entries in rows for raw in entries]

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with translate_errors(self._raw_url):
            return int(await self._client.xack(stream, group, *ids))

    async def pending_count(self, stream: str, group: str) -> int:
        with translate_errors(self._raw_url):
            try:
                summary = await self._client.xpending(stream, group)
            except redis_errors.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    return 0
                raise
        return int(summary["pending"])

    async def delivery_counts(self, stream: str, group: str, ids: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        with translate_errors(self._raw_url):
            async with self._client.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.xpending_range(stream, group, entry_id, entry_id, 1)
                replies = await pipe.execute()
        for rows in replies:
            for row in rows:
                counts[_s(row["message_id"])] = int(row["times_delivered"])
        return counts

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
        with translate_errors(self._raw_url):
            reply = await self._reclaim(keys=[stream], args=[group, consumer, min_idle_ms, start, count, *keep])
        next_start, entries, deleted = reply[0], reply[1], reply[2] if len(reply) > 2 else []
        # From a script the fields come as a flat list, and an entry deleted meanwhile as false.
        claimed = [Entry(_s(raw[0]), dict(zip(raw[1][::2], raw[1][1::2], strict=True))) for raw in entries if raw]
        return AutoclaimResult(_s(next_start), claimed, [_s(d) for d in deleted])

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str], *, idle_ms: int = 0) -> list[str]:
        if not ids:
            return []
        with translate_errors(self._raw_url):
            args: list[Any] = [group, consumer, idle_ms, *ids]
            owned = await self._touch(keys=[stream], args=args)
        return [_s(i) for i in owned]

    async def read(self, streams: Mapping[str, str], *, count: int, block_ms: int) -> list[tuple[str, Entry]]:
        with translate_errors(self._raw_url):
            if block_ms <= 0:
                reply = await self._client.xread(_ids(streams), count=count)
            else:
                async with self._blocking.lease() as client:
                    reply = await client.xread(_ids(streams), count=count, block=min(block_ms, MAX_BLOCK_MS))
        rows: Any = reply or []
        return [(_s(name), _entry(raw)) for name, entries in rows for raw in entries]

    async def range(self, stream: str, *, start: str = "-", end: str = "+", count: int | None = None) -> list[Entry]:
        with translate_errors(self._raw_url):
            reply = await self._client.xrange(stream, start, end, count=count)
        return [_entry(raw) for raw in reply or []]

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with translate_errors(self._raw_url):
            return int(await self._client.xdel(stream, *ids))

    async def length(self, stream: str) -> int:
        with translate_errors(self._raw_url):
            return int(await self._client.xlen(stream))

    async def last_id(self, stream: str) -> str:
        with translate_errors(self._raw_url):
            reply: Any = await self._client.xrevrange(stream, count=1)
        return _s(reply[0][0]) if reply else "0-0"

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
        args: list[Any] = [group, entry_id, result, result_ttl_ms, reply_maxlen, reply_ttl_ms, *_flat(reply)]
        keys = [stream, result_key, reply_stream]
        with translate_errors(self._raw_url):
            out = await self._replicated(lambda c: self._complete(keys=keys, args=args, client=c))
        stored = int(out[0]) == 1
        return CompleteResult(stored=stored, existing=None if stored else out[1])

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
        with translate_errors(self._raw_url):
            async with self._client.pipeline(transaction=True) as pipe:
                if reply_stream is not None and reply is not None:
                    pipe.xadd(reply_stream, _fields(reply), maxlen=reply_maxlen, approximate=True)
                    pipe.pexpire(reply_stream, reply_ttl_ms)
                pipe.xack(stream, group, entry_id)
                await pipe.execute()

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
        # MULTI keeps the order letter-then-ack and makes both happen or neither.
        with translate_errors(self._raw_url):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(dlq_stream, _fields(letter), maxlen=dlq_maxlen, approximate=True)
                if reply_stream is not None and reply is not None:
                    pipe.xadd(reply_stream, _fields(reply), maxlen=reply_maxlen, approximate=True)
                    pipe.pexpire(reply_stream, reply_ttl_ms)
                pipe.xack(stream, group, entry_id)
                results = await pipe.execute()
        return _s(results[0])

    async def move(self, src: str, entry_id: str, dst: str, fields: Mapping[bytes, bytes], *, maxlen: int) -> str:
        with translate_errors(self._raw_url):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(dst, _fields(fields), maxlen=maxlen, approximate=True)
                pipe.xdel(src, entry_id)
                results = await pipe.execute()
        return _s(results[0])

    # -- keys ----------------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        with translate_errors(self._raw_url):
            value: Any = await self._client.get(key)
        return value if value is None else bytes(value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        with translate_errors(self._raw_url):
            values: Any = await self._client.mget(list(keys))
        return [v if v is None else bytes(v) for v in values]

    async def set(self, key: str, value: bytes, *, ttl_ms: int | None = None, nx: bool = False) -> bool:
        with translate_errors(self._raw_url):
            return bool(await self._replicated(lambda c: c.set(key, value, px=ttl_ms or None, nx=nx)))

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes | None, *, ttl_ms: int | None = None
    ) -> bool:
        args: list[bytes | int] = [
            int(expected is None),
            expected or b"",
            int(value is None),
            value or b"",
            ttl_ms or 0,
        ]
        with translate_errors(self._raw_url):
            return bool(await self._replicated(lambda c: self._compare_and_set(keys=[key], args=args, client=c)))

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        with translate_errors(self._raw_url):
            return int(await self._client.delete(*keys))

    async def scan(self, pattern: str) -> list[str]:
        with translate_errors(self._raw_url):
            return sorted({_s(k) async for k in self._client.scan_iter(match=pattern, count=500)})
