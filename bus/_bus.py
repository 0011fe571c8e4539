"""The bus: send, request/reply, events, dead letters and presence over one transport."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import structlog

from bus._consumer import Handler, Subscription
from bus._dead_letters import DeadLetter, parse_letter
from bus._keys import Keys
from bus._options import BusOptions
from bus._replies import ReplyRouter
from bus._transport import Transport
from bus._wire import decode_fields, encode_fields
from protocol import (
    BusMeta,
    Envelope,
    NotificationMessage,
    RequestMessage,
    RequestTimeout,
    ResponseMessage,
    RpcError,
    Unavailable,
    new_id,
)

__all__ = ["Bus", "EventRecord"]

log = structlog.get_logger("bus")


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of the events stream; ``id`` resumes a watcher from this point."""

    id: str
    envelope: Envelope


class Bus:
    """Typed messaging between agents over a ``Transport``.

    Use as an async context manager: it owns a background task that reads this caller's
    reply stream. ``client_id`` names that stream and must be unique per process.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        options: BusOptions | None = None,
        client_id: str | None = None,
        sender: str = "client",
    ) -> None:
        self.transport = transport
        self.options = options or BusOptions()
        self.keys = Keys(self.options.namespace)
        self.client_id = client_id or new_id()
        self.sender = sender
        self._replies = ReplyRouter(transport, self.keys, self.options, self.client_id)
        self._tg: anyio.abc.TaskGroup | None = None
        self._replies_started = False

    @property
    def url(self) -> str:
        return self.transport.url

    async def __aenter__(self) -> Bus:
        await self.transport.ping()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Background tasks are cancelled and awaited without feeding the body's exception into
        # the task group, so callers see their own exception, not an ExceptionGroup around it.
        assert self._tg is not None
        tg, self._tg = self._tg, None
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                if self._replies_started:
                    with contextlib.suppress(Exception):
                        await self._replies.cleanup()
                with contextlib.suppress(Exception):
                    await self.transport.close()

    async def start_task(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``func(*args, task_status=…)`` in the bus's background tasks until the bus closes."""
        if self._tg is None:
            raise RuntimeError("the bus is not open")
        await self._tg.start(func, *args)

    # -- sending --------------------------------------------------------------------------
    def _meta(self, **fields: Any) -> BusMeta:
        return BusMeta(sender=self.sender, **fields)

    async def send(
        self,
        agent: str,
        message: RequestMessage | NotificationMessage,
        *,
        trace_id: str | None = None,
        idempotency_key: str | None = None,
        expires_in_s: float | None = None,
    ) -> str:
        """Put a message in an agent's inbox without waiting for an answer; returns its entry id.

        A request sent so is run once (by ``idempotency_key``) whenever the agent takes it, unless
        ``expires_in_s`` passed first; nobody receives its response.
        """
        extra: dict[str, Any] = {"trace_id": trace_id} if trace_id else {}
        if expires_in_s is not None:
            extra["deadline"] = time.time() + expires_in_s
        meta = self._meta(idempotency_key=idempotency_key, **extra)
        return await self.send_envelope(agent, Envelope(meta=meta, message=message))

    async def send_envelope(self, agent: str, envelope: Envelope) -> str:
        fields = encode_fields(envelope, max_bytes=self.options.max_message_bytes)
        return await self.transport.add(self.keys.inbox(agent), fields, maxlen=self.options.inbox_maxlen)

    async def request(
        self,
        agent: str,
        message: RequestMessage,
        *,
        timeout: float,
        idempotency_key: str | None = None,
        trace_id: str | None = None,
        attempt: int = 1,
    ) -> ResponseMessage:
        """Send a request to an agent and wait for its response.

        Raises:
            RequestTimeout: no response within ``timeout`` seconds (the caller never hangs).
            Unavailable: the broker cannot be reached.
            MessageTooLarge: the request is over the size limit.
        """
        await self._ensure_replies()
        extra: dict[str, Any] = {"trace_id": trace_id} if trace_id else {}
        meta = self._meta(
            reply_to=self._replies.logical_stream,
            deadline=time.time() + timeout,
            idempotency_key=idempotency_key,
            attempt=attempt,
            **extra,
        )
        slot = self._replies.expect(meta.message_id)
        try:
            await self.send_envelope(agent, Envelope(meta=meta, message=message))
            with anyio.move_on_after(timeout):
                await slot.done.wait()
        finally:
            self._replies.forget(meta.message_id)
        if slot.error is not None:
            raise slot.error
        if slot.response is None:
            raise RequestTimeout(
                f"no response from agent {agent!r} to {message.method} within {timeout:g}s",
                data={"agent": agent, "method": message.method, "timeout": timeout},
            )
        return slot.response

    async def _ensure_replies(self) -> None:
        if self._replies_started:
            return
        if self._tg is None:
            raise RuntimeError("use the Bus as an async context manager before making requests")
        self._replies_started = True
        await self._tg.start(self._replies.run)

    # -- consuming ------------------------------------------------------------------------
    def subscribe(
        self,
        agent: str,
        handler: Handler,
        *,
        consumer: str | None = None,
        concurrency: int = 4,
        burst: bool = False,
    ) -> Subscription:
        """A consumer of ``agent``'s inbox; start it with ``await task_group.start(sub.run)``.

        ``burst=True`` makes ``run`` return once the inbox is empty and nothing is pending,
        which keeps tests deterministic.
        """
        return Subscription(
            self.transport,
            self.keys,
            self.options,
            agent=agent,
            handler=handler,
            consumer=consumer or self.client_id,
            concurrency=concurrency,
            burst=burst,
        )

    # -- events ---------------------------------------------------------------------------
    async def publish_event(self, message: NotificationMessage, *, trace_id: str | None = None) -> str:
        """Append a notification to the events stream; returns its id."""
        meta = self._meta(**({"trace_id": trace_id} if trace_id else {}))
        fields = encode_fields(Envelope(meta=meta, message=message), max_bytes=self.options.max_message_bytes)
        return await self.transport.add(self.keys.events, fields, maxlen=self.options.events_maxlen)

    async def events(self, *, since: str = "$", count: int = 100) -> AsyncIterator[EventRecord]:
        """Tail the events stream after ``since`` (an id, ``0`` for the start, ``$`` for new only).

        Malformed entries are skipped with a warning; the broker going away is retried.
        """
        last = await self.transport.last_id(self.keys.events) if since == "$" else since
        backoff = 0.1
        while True:
            try:
                found = await self.transport.read({self.keys.events: last}, count=count, block_ms=self.options.block_ms)
                backoff = 0.1
            except Unavailable as exc:
                log.warning("events stream unreachable, retrying", error=exc.message)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for _, entry in found:
                last = entry.id
                try:
                    envelope = decode_fields(entry.fields, max_bytes=self.options.max_message_bytes)
                except RpcError as exc:
                    log.warning("skipping malformed event", id=entry.id, error=exc.message)
                    continue
                yield EventRecord(entry.id, envelope)

    # -- dead letters ---------------------------------------------------------------------
    async def dead_letters(self, *, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters."""
        entries = await self.transport.range(self.keys.dead_letters, count=count)
        return [parse_letter(e) for e in entries]

    async def replay_dead_letter(self, letter_id: str) -> str:
        """Put a dead letter back on its original stream (as a new entry); returns the new id."""
        entries = await self.transport.range(self.keys.dead_letters, start=letter_id, end=letter_id, count=1)
        if not entries:
            raise LookupError(f"no dead letter with id {letter_id!r}")
        letter = parse_letter(entries[0])
        if not letter.stream.startswith(self.keys.stream("inbox:")):
            raise ValueError(f"dead letter {letter_id} came from {letter.stream!r}, not an inbox")
        return await self.transport.move(
            self.keys.dead_letters, letter_id, letter.stream, letter.raw, maxlen=self.options.inbox_maxlen
        )

    async def purge_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        """Delete the given dead letters, or all of them."""
        if ids is None:
            ids = [e.id for e in await self.transport.range(self.keys.dead_letters)]
        return await self.transport.delete_entries(self.keys.dead_letters, ids)

    # -- presence -------------------------------------------------------------------------
    async def cancel_request(self, agent: str, key: str, *, ttl_ms: int = 86_400_000) -> None:
        """Ask whichever replica handles request ``key`` (idempotency key or message id) to stop.

        A flag rather than a message: a consumer group hands a message to one replica, and the
        one running the request may be another.
        """
        await self.transport.set(self.keys.cancel(agent, key), b"1", ttl_ms=ttl_ms)

    async def cancel_requested(self, agent: str, key: str) -> bool:
        return await self.transport.get(self.keys.cancel(agent, key)) is not None

    async def put_presence(self, member: str, payload: bytes, *, ttl_ms: int) -> None:
        """Announce (or refresh) a member; it disappears ``ttl_ms`` after the last refresh."""
        await self.transport.set(self.keys.presence(member), payload, ttl_ms=ttl_ms)

    async def remove_presence(self, member: str) -> None:
        await self.transport.delete([self.keys.presence(member)])

    async def presence(self) -> dict[str, bytes]:
        """Every live member and its payload."""
        keys = await self.transport.scan(self.keys.presence_pattern)
        values = await self.transport.get_many(keys)
        prefix = len(self.keys.presence(""))
        return {k[prefix:]: v for k, v in zip(keys, values, strict=True) if v is not None}
