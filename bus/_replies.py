"""Caller side of request/reply: one reply stream per caller, responses matched by correlation id."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import structlog

from bus._keys import Keys
from bus._options import BusOptions
from bus._transport import Transport
from bus._wire import decode_fields
from protocol import ConnectionClosed, Envelope, ResponseMessage, RpcError, Unavailable

__all__ = ["ReplyRouter"]

log = structlog.get_logger("bus.replies")


@dataclass
class _Slot:
    done: anyio.Event = field(default_factory=anyio.Event)
    response: ResponseMessage | None = None
    error: RpcError | None = None


class ReplyRouter:
    """Reads this caller's reply stream and hands each response to the request awaiting it."""

    def __init__(self, transport: Transport, keys: Keys, options: BusOptions, client_id: str) -> None:
        self._transport = transport
        self._options = options
        self.logical_stream = Keys.reply_logical(client_id)
        self._stream = keys.stream(self.logical_stream)
        self._slots: dict[str, _Slot] = {}
        self._closed = False

    def expect(self, message_id: str) -> _Slot:
        if self._closed:
            raise ConnectionClosed("the bus is closed")
        slot = self._slots[message_id] = _Slot()
        return slot

    def forget(self, message_id: str) -> None:
        self._slots.pop(message_id, None)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Read replies until cancelled; reconnects with backoff when the broker drops."""
        last = "0-0"  # the stream is this caller's own, so everything in it is for us
        backoff = 0.1
        task_status.started()
        try:
            while True:
                try:
                    found = await self._transport.read({self._stream: last}, count=100, block_ms=self._options.block_ms)
                    backoff = 0.1
                except Unavailable as exc:
                    log.warning("reply stream unreachable, retrying", error=str(exc))
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                for _, entry in found:
                    last = entry.id
                    self._deliver(entry.fields)
        finally:
            self._close_slots()

    def _deliver(self, fields: dict[bytes, bytes]) -> None:
        try:
            envelope: Envelope = decode_fields(fields, max_bytes=self._options.max_message_bytes)
        except RpcError as exc:
            log.warning("dropping malformed reply", error=exc.message)
            return
        correlation = envelope.meta.correlation_id
        slot = self._slots.pop(correlation, None) if correlation else None
        if slot is None:
            log.debug("reply for no waiting request (late or duplicate)", correlation=correlation)
            return
        if not isinstance(envelope.message, ResponseMessage):
            slot.error = RpcError(f"reply is a {type(envelope.message).__name__}, not a response")
        else:
            slot.response = envelope.message
        slot.done.set()

    def _close_slots(self) -> None:
        self._closed = True
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.error = ConnectionClosed("the bus closed while a reply was awaited")
            slot.done.set()

    async def cleanup(self) -> None:
        """Delete this caller's reply stream."""
        await self._transport.delete([self._stream])
