"""Consumer side: at-least-once delivery of an inbox to a handler.

One ``Subscription`` is one consumer in the inbox's consumer group. It first drains its own
pending entries (left by an earlier run under the same consumer name), then reads new ones;
a reclaim loop takes over entries left idle by dead consumers (XAUTOCLAIM), and a heartbeat
loop keeps the idle time of entries in progress low so a live consumer is never robbed.
Entries are acked only after the handler finished and its reply was stored.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import structlog
from pydantic import BaseModel, ConfigDict

from bus._dead_letters import letter_fields
from bus._keys import Keys
from bus._options import BusOptions
from bus._transport import Entry, GroupMissing, Transport
from bus._wire import decode_fields, encode_fields, raw_body
from protocol import (
    DEAD_LETTERED,
    INTERNAL_ERROR,
    BusMeta,
    Envelope,
    ErrorData,
    ErrorResponse,
    RejectMessage,
    RequestId,
    RequestMessage,
    RequestTimeout,
    ResponseMessage,
    RetryLater,
    RpcError,
    Unavailable,
    error_from_exception,
    salvage_meta,
)

__all__ = ["Delivery", "Handler", "Subscription"]

log = structlog.get_logger("bus.consumer")

_TWIN_POLL_S = 0.5
"""How often a request waiting on a twin with the same idempotency key looks for its result."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a message came from and how often it has been delivered."""

    agent: str
    stream: str
    entry_id: str
    consumer: str
    deliveries: int


Handler = Callable[[Envelope, Delivery], Awaitable[ResponseMessage | None]]
"""Handles one message; returns the response for requests (``None`` for notifications)."""


class _StoredResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    correlation_id: str
    response: ResponseMessage


@dataclass(slots=True)
class _AckWaiter:
    entry_id: str
    done: anyio.Event
    error: Exception | None = None


def _readdress(response: ResponseMessage, request_id: RequestId) -> ResponseMessage:
    return response.model_copy(update={"id": request_id})


class Subscription:
    """One consumer of one agent inbox. Run with ``await sub.run()``; stop with ``sub.stop()``."""

    def __init__(
        self,
        transport: Transport,
        keys: Keys,
        options: BusOptions,
        *,
        agent: str,
        handler: Handler,
        consumer: str,
        concurrency: int = 4,
        burst: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._transport = transport
        self._keys = keys
        self._opts = options
        self.agent = agent
        self.stream = keys.inbox(agent)
        self.group = agent
        self.consumer = consumer
        self._handler = handler
        self._concurrency = concurrency
        self._burst = burst
        self._free = concurrency  # handler slots not taken by a read or a running handler
        self._slot_freed = anyio.Event()
        self.in_flight: dict[str, Delivery] = {}
        self._settling: set[str] = set()
        """In-flight entries whose ack is on its way (the heartbeat no longer owns them)."""
        self._claims: dict[str, str] = {}
        """In-flight entry id -> claim key of its idempotency key (refreshed by the heartbeat)."""
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._grace = 30.0
        self._read_scope: anyio.CancelScope | None = None
        self._reclaim_cursor = "0-0"
        self._drained = anyio.Event()
        self._acks: list[_AckWaiter] = []
        self._acks_wanted = anyio.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def stop(self, *, grace: float = 30.0) -> None:
        """Stop taking work; in-flight handlers get ``grace`` seconds, then are released."""
        self._grace = grace
        self._stop.set()
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._ensure_group()
            async with anyio.create_task_group() as workers, anyio.create_task_group() as loops:
                loops.start_soon(self._heartbeat_loop)
                loops.start_soon(self._ack_loop)
                task_status.started()
                await self._drain_own_pending(workers)
                await self._read_loop(workers)
                await self._finish_in_flight(workers)
                loops.cancel_scope.cancel()
        finally:
            self._stopped.set()

    async def _ensure_group(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._transport.ensure_group(self.stream, self.group)
                return
            except Unavailable as exc:
                log.warning("broker unreachable, retrying", agent=self.agent, error=exc.message)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _finish_in_flight(self, workers: anyio.abc.TaskGroup) -> None:
        with anyio.move_on_after(self._grace):
            while self.in_flight:
                self._drained = anyio.Event()
                await self._drained.wait()
        if self.in_flight:
            ids = list(self.in_flight)
            workers.cancel_scope.cancel()
            # Make them idle at once so a live replica reclaims them without waiting.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                released = await self._transport.touch(
                    self.stream, self.group, self.consumer, ids, idle_ms=10 * self._opts.reclaim_idle_ms
                )
                log.warning("released unfinished messages", agent=self.agent, ids=released)

    # -- reading --------------------------------------------------------------------------
    async def _take_slots(self) -> int:
        """Wait for at least one free handler slot, then take as many as a read may fill."""
        while self._free == 0:
            self._slot_freed = anyio.Event()
            await self._slot_freed.wait()
        taken = min(self._free, self._opts.batch_size)
        self._free -= taken
        return taken

    def _give_slots(self, n: int) -> None:
        if n:
            self._free += n
            self._slot_freed.set()

    async def _read_loop(self, workers: anyio.abc.TaskGroup) -> None:
        """Take free slots, fill them with reclaimed entries when a pass is due, else new ones.

        Reclaim runs in this loop rather than beside it so the two never compete for slots.
        """
        backoff = 0.1
        reclaim_every = max(self._opts.reclaim_idle_ms / 4, 20) / 1000
        next_reclaim = anyio.current_time() + reclaim_every
        while not self._stop.is_set():
            taken = 0
            batch: list[tuple[Entry, int]] = []
            with anyio.CancelScope() as scope:
                self._read_scope = scope
                taken = await self._take_slots()
                try:
                    if anyio.current_time() >= next_reclaim:
                        next_reclaim = anyio.current_time() + reclaim_every
                        batch = await self._reclaim(taken)
                    if not batch:
                        batch = [(e, 1) for e in await self._read_new(taken)]
                    backoff = 0.1
                except Unavailable as exc:
                    log.warning("broker unreachable, retrying", agent=self.agent, error=exc.message)
                    self._give_slots(taken)
                    taken = 0
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            self._read_scope = None
            self._give_slots(taken - len(batch))
            for entry, deliveries in batch:
                self._dispatch(workers, entry, deliveries)
            idle = self._burst and not batch and not self.in_flight
            if idle and await self._transport.pending_count(self.stream, self.group) == 0:
                return

    async def _read_new(self, count: int) -> list[Entry]:
        block = 50 if self._burst else self._opts.block_ms
        try:
            return await self._transport.read_group(
                self.stream, self.group, self.consumer, pending=False, count=count, block_ms=block
            )
        except GroupMissing:
            await self._ensure_group()
            return []

    async def _reclaim(self, count: int) -> list[tuple[Entry, int]]:
        """One XAUTOCLAIM pass: entries idle past ``reclaim_idle_ms`` belong to dead consumers."""
        try:
            # A starved event loop delays heartbeats and this pass alike: our own entries are kept
            # fresh in the claim's atomic step, or the pass would claim them (raising their delivery
            # count towards the dead letter limit) although their handlers still run here. The
            # loop can starve between any two awaits, so a touch before the claim would not do.
            await self._refresh_claims()
            claim = await self._transport.autoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_ms=self._opts.reclaim_idle_ms,
                start=self._reclaim_cursor,
                count=count,
                keep=list(self.in_flight),
            )
        except GroupMissing:
            await self._ensure_group()
            return []
        self._reclaim_cursor = claim.next_start
        if claim.deleted:
            log.error(
                "pending messages were trimmed from the inbox before completion",
                agent=self.agent,
                ids=claim.deleted,
            )
        if not claim.entries:
            return []
        counts = await self._transport.delivery_counts(self.stream, self.group, [e.id for e in claim.entries])
        fresh = []
        for entry in claim.entries:
            if entry.id in self.in_flight:
                continue  # our own slow handler's entry: it is still being worked on
            log.info("reclaimed message", agent=self.agent, entry_id=entry.id, deliveries=counts.get(entry.id))
            fresh.append((entry, counts.get(entry.id, 1)))
        return fresh

    async def _drain_own_pending(self, workers: anyio.abc.TaskGroup) -> None:
        while not self._stop.is_set():
            taken = await self._take_slots()
            try:
                entries = await self._transport.read_group(
                    self.stream, self.group, self.consumer, pending=True, count=taken, block_ms=0
                )
                counts = await self._transport.delivery_counts(self.stream, self.group, [e.id for e in entries])
            except (Unavailable, GroupMissing):
                self._give_slots(taken)
                return
            fresh = [e for e in entries if e.id not in self.in_flight]
            self._give_slots(taken - len(fresh))
            for entry in fresh:
                self._dispatch(workers, entry, counts.get(entry.id, 1))
            if len(entries) < taken or not fresh:
                return

    async def _ack(self, entry_id: str) -> None:
        """Ack after handling; acks that pile up during one XACK round trip go in the next one."""
        self._settling.add(entry_id)
        waiter = _AckWaiter(entry_id, anyio.Event())
        self._acks.append(waiter)
        self._acks_wanted.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    async def _ack_loop(self) -> None:
        while True:
            await self._acks_wanted.wait()
            self._acks_wanted = anyio.Event()
            batch, self._acks = self._acks, []
            error: Exception | None = None
            try:
                await self._transport.ack(self.stream, self.group, [w.entry_id for w in batch])
            except (Unavailable, GroupMissing) as exc:
                error = exc
            for waiter in batch:
                waiter.error = error
                waiter.done.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self._opts.heartbeat_ms / 1000)
            try:
                await self._refresh_in_flight()
            except (Unavailable, GroupMissing) as exc:
                log.warning("heartbeat failed", agent=self.agent, error=str(exc))

    async def _refresh_claims(self) -> None:
        """Keep the idempotency claims of the requests running here."""
        for claim in list(self._claims.values()):
            await self._transport.set(claim, self.consumer.encode(), ttl_ms=self._opts.reclaim_idle_ms)

    async def _refresh_in_flight(self) -> None:
        """Mark the entries this consumer works on as fresh (idle 0) and keep their running claims."""
        ids = list(self.in_flight)
        if not ids:
            return
        await self._refresh_claims()
        owned = await self._transport.touch(self.stream, self.group, self.consumer, ids)
        # An entry acked while the touch ran is settled, not lost.
        lost = [i for i in ids if i not in owned and i in self.in_flight and i not in self._settling]
        if lost:
            log.warning("lost ownership of in-flight messages", agent=self.agent, ids=sorted(lost))

    # -- processing -----------------------------------------------------------------------
    def _dispatch(self, workers: anyio.abc.TaskGroup, entry: Entry, deliveries: int) -> None:
        delivery = Delivery(self.agent, self.stream, entry.id, self.consumer, deliveries)
        self.in_flight[entry.id] = delivery
        workers.start_soon(self._process, entry, delivery)

    async def _process(self, entry: Entry, delivery: Delivery) -> None:
        try:
            await self._process_one(entry, delivery)
        except Unavailable as exc:
            # The outcome could not be recorded; the entry stays pending and is redelivered.
            log.warning("could not settle message", agent=self.agent, entry_id=entry.id, error=exc.message)
        except GroupMissing:
            log.warning("consumer group vanished while settling a message", agent=self.agent)
        except Exception:
            # A defect here must not take the consumer down; the entry stays pending.
            log.exception("unexpected error settling a message", agent=self.agent, entry_id=entry.id)
        finally:
            self.in_flight.pop(entry.id, None)
            self._claims.pop(entry.id, None)
            self._settling.discard(entry.id)
            self._give_slots(1)
            if not self.in_flight:
                self._drained.set()

    async def _process_one(self, entry: Entry, delivery: Delivery) -> None:
        opts = self._opts
        try:
            envelope = decode_fields(entry.fields, max_bytes=opts.max_message_bytes)
        except RpcError as exc:
            if not entry.fields:
                await self._ack(entry.id)
                log.error("acked a pending entry whose content was trimmed", entry_id=entry.id)
                return
            meta, request_id = salvage_meta(raw_body(entry.fields) or b"")
            await self._dead_letter(entry, delivery, exc.to_error_data(), meta, request_id)
            return
        meta = envelope.meta
        message = envelope.message
        is_request = isinstance(message, RequestMessage)
        request_id = message.id if isinstance(message, RequestMessage) else None

        if delivery.deliveries > opts.max_deliveries:
            error = ErrorData(
                code=DEAD_LETTERED,
                message=f"gave up after {delivery.deliveries - 1} deliveries "
                "(the consumers handling it died or failed each time)",
            )
            await self._dead_letter(entry, delivery, error, meta, request_id)
            return
        if is_request and meta.deadline is not None and meta.deadline < time.time():
            timeout = RequestTimeout("the request's deadline passed before it was processed")
            await self._settle_reply(entry, meta, ErrorResponse(id=request_id, error=timeout.to_error_data()))
            return
        if is_request and await self._answer_from_store(entry, meta, request_id):
            return
        if is_request and meta.idempotency_key is not None:
            claim = self._result_key(meta) + ":running"
            if not await self._claim_or_wait(claim, entry, meta, request_id):
                return
            try:
                await self._handle(entry, delivery, envelope, is_request, request_id)
            finally:
                self._claims.pop(entry.id, None)
                with anyio.CancelScope(shield=True):
                    await self._transport.delete([claim])
            return
        await self._handle(entry, delivery, envelope, is_request, request_id)

    async def _claim_or_wait(self, claim: str, entry: Entry, meta: BusMeta, request_id: RequestId | None) -> bool:
        """Claim the idempotency key, or wait for the twin request holding it and answer with its result.

        A caller that re-sends a request after a crash (same key, new message) must not start the
        work a second time while the first copy still runs. Returns True when this copy should run.
        """
        ttl = self._opts.reclaim_idle_ms
        # A twin of a request this consumer runs never takes its claim, even one that lapsed while a
        # stalled event loop kept the heartbeat from refreshing it: the work is alive here.
        while claim in self._claims.values() or not await self._transport.set(
            claim, self.consumer.encode(), ttl_ms=ttl, nx=True
        ):
            await anyio.sleep(_TWIN_POLL_S)
            if await self._answer_from_store(entry, meta, request_id):
                return False
        self._claims[entry.id] = claim
        # The claim was free (or its holder died and it expired): the stored result may have landed meanwhile.
        if await self._answer_from_store(entry, meta, request_id):
            self._claims.pop(entry.id, None)
            await self._transport.delete([claim])
            return False
        return True

    async def _handle(
        self, entry: Entry, delivery: Delivery, envelope: Envelope, is_request: bool, request_id: RequestId | None
    ) -> None:
        opts = self._opts
        meta = envelope.meta
        try:
            response = await self._handler(envelope, delivery)
        except RetryLater:
            await self._nack(entry, delivery)
            return
        except RejectMessage as exc:
            error = ErrorData(code=DEAD_LETTERED, message=f"rejected by handler: {exc}")
            await self._dead_letter(entry, delivery, error, meta, request_id)
            return
        except RpcError as exc:
            response = ErrorResponse(id=request_id, error=exc.to_error_data())
        except Exception as exc:
            log.warning(
                "handler failed",
                agent=self.agent,
                entry_id=entry.id,
                deliveries=delivery.deliveries,
                error=repr(exc),
            )
            if delivery.deliveries >= opts.max_deliveries:
                cause = error_from_exception(exc)
                error = ErrorData(
                    code=DEAD_LETTERED,
                    message=f"failed on all {delivery.deliveries} deliveries: {cause.message}",
                )
                await self._dead_letter(entry, delivery, error, meta, request_id)
            else:
                await self._nack(entry, delivery)
            return

        if not is_request or request_id is None:
            await self._ack(entry.id)
            return
        if response is None:
            response = ErrorResponse(
                id=request_id, error=ErrorData(code=INTERNAL_ERROR, message="handler returned no response")
            )
        await self._complete(entry, meta, request_id, response)

    def _result_key(self, meta: BusMeta) -> str:
        return self._keys.result(self.agent, meta.idempotency_key or meta.message_id)

    async def _answer_from_store(self, entry: Entry, meta: BusMeta, request_id: RequestId | None) -> bool:
        raw = await self._transport.get(self._result_key(meta))
        if raw is None or request_id is None:
            return False
        stored = _StoredResult.model_validate_json(raw)
        if stored.correlation_id == meta.message_id:
            # This very request was answered already (reply published atomically with the store).
            await self._ack(entry.id)
        else:
            await self._settle_reply(entry, meta, _readdress(stored.response, request_id))
        return True

    async def _complete(self, entry: Entry, meta: BusMeta, request_id: RequestId, response: ResponseMessage) -> None:
        self._settling.add(entry.id)
        opts = self._opts
        stored = _StoredResult(correlation_id=meta.message_id, response=response)
        if meta.reply_to is None:
            # Nobody waits for a reply, but a re-send with the same key must still find the result.
            if meta.idempotency_key is not None:
                await self._transport.set(
                    self._result_key(meta), stored.model_dump_json().encode(), ttl_ms=opts.result_ttl_ms, nx=True
                )
            await self._ack(entry.id)
            return
        outcome = await self._transport.complete(
            self.stream,
            self.group,
            entry.id,
            result_key=self._result_key(meta),
            result=stored.model_dump_json().encode(),
            result_ttl_ms=opts.result_ttl_ms,
            reply_stream=self._keys.stream(meta.reply_to),
            reply=self._reply_fields(meta, response),
            reply_maxlen=opts.reply_maxlen,
            reply_ttl_ms=opts.reply_ttl_ms,
        )
        if not outcome.stored and outcome.existing is not None:
            earlier = _StoredResult.model_validate_json(outcome.existing)
            if earlier.correlation_id != meta.message_id:
                # Another request with the same idempotency key won the race; answer with its result.
                await self._settle_reply(entry, meta, _readdress(earlier.response, request_id))

    async def _settle_reply(self, entry: Entry, meta: BusMeta, response: ResponseMessage) -> None:
        self._settling.add(entry.id)
        await self._transport.reply_and_ack(
            self.stream,
            self.group,
            entry.id,
            reply_stream=self._keys.stream(meta.reply_to) if meta.reply_to else None,
            reply=self._reply_fields(meta, response) if meta.reply_to else None,
            reply_maxlen=self._opts.reply_maxlen,
            reply_ttl_ms=self._opts.reply_ttl_ms,
        )

    def _reply_fields(self, meta: BusMeta, response: ResponseMessage) -> dict[bytes, bytes]:
        reply = Envelope(
            meta=BusMeta(
                sender=f"{self.agent}/{self.consumer}",
                correlation_id=meta.message_id,
                trace_id=meta.trace_id,
            ),
            message=response,
        )
        return encode_fields(reply, max_bytes=self._opts.max_message_bytes)

    async def _nack(self, entry: Entry, delivery: Delivery) -> None:
        """Leave the entry pending, due for reclaim after an exponential backoff."""
        opts = self._opts
        delay = min(opts.retry_base_ms * 2 ** (delivery.deliveries - 1), opts.reclaim_idle_ms)
        await self._transport.touch(
            self.stream, self.group, self.consumer, [entry.id], idle_ms=opts.reclaim_idle_ms - delay
        )

    async def _dead_letter(
        self,
        entry: Entry,
        delivery: Delivery,
        error: ErrorData,
        meta: BusMeta | None,
        request_id: RequestId | None,
    ) -> None:
        self._settling.add(entry.id)
        reply_stream = reply = None
        if meta is not None and meta.reply_to is not None:
            reply_stream = self._keys.stream(meta.reply_to)
            reply = self._reply_fields(meta, ErrorResponse(id=request_id, error=error))
        letter_id = await self._transport.dead_letter(
            self.stream,
            self.group,
            entry.id,
            dlq_stream=self._keys.dead_letters,
            letter=letter_fields(
                stream=self.stream,
                group=self.group,
                entry=entry,
                consumer=self.consumer,
                deliveries=delivery.deliveries,
                error=error,
            ),
            dlq_maxlen=self._opts.dlq_maxlen,
            reply_stream=reply_stream,
            reply=reply,
            reply_maxlen=self._opts.reply_maxlen,
            reply_ttl_ms=self._opts.reply_ttl_ms,
        )
        log.warning(
            "dead-lettered message",
            agent=self.agent,
            entry_id=entry.id,
            letter_id=letter_id,
            reason=error.message,
        )
