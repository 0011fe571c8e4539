"""Following the progress an agent publishes for one call, as the MCP gateway and the Conductor do.

A caller sends a tool call with a progress token; the agent publishes ``notifications/progress``
with that token on the bus's events stream (``CallContext.progress``). ``follow_progress`` hands
each of them to a callback while the call runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import structlog

from bus import Bus
from protocol import ProgressNotification, ProgressParams, RpcError

__all__ = ["OnProgress", "follow_progress"]

log = structlog.get_logger("runtime.progress")

OnProgress = Callable[[ProgressParams], Awaitable[None]]
"""Receives one progress notification of the followed call."""

DRAIN_TIMEOUT_S = 2.0
"""How long a finished call waits for its last progress notifications to be handed on."""


def _position(entry_id: str) -> tuple[int, int]:
    """Order of a stream entry id (``milliseconds-sequence`` on both backends)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class _Relay:
    """Hands on the progress published for ``token`` after entry ``since``."""

    def __init__(self, bus: Bus, since: str, token: str | int, on_progress: OnProgress) -> None:
        self._bus = bus
        self._since = since
        self._token = token
        self._on_progress = on_progress
        self._position = _position(since)
        self._moved = anyio.Event()
        self._stopped = False

    async def run(self) -> None:
        """Relay until cancelled; progress is a courtesy, so a failure only stops the relay."""
        try:
            async for record in self._bus.events(since=self._since):
                message = record.envelope.message
                if isinstance(message, ProgressNotification) and message.params.progress_token == self._token:
                    await self._on_progress(message.params)
                self._position = _position(record.id)
                self._moved.set()
                self._moved = anyio.Event()
        except Exception:
            log.warning("progress relay stopped", exc_info=True)
        finally:
            self._stopped = True
            self._moved.set()

    async def drain(self, until: str) -> None:
        """Return once every event up to entry ``until`` was relayed (or the relay stopped)."""
        target = _position(until)
        while not self._stopped and self._position < target:
            await self._moved.wait()


@contextlib.asynccontextmanager
async def follow_progress(bus: Bus, token: str | int, on_progress: OnProgress) -> AsyncIterator[None]:
    """Hand ``on_progress`` the progress published for ``token`` while the block runs.

    A block that ends normally first waits (briefly) for the progress published before its end,
    so a call's progress is handed on before its result is: over MCP's HTTP transport the
    request's event stream closes with the result.
    """
    since = await bus.transport.last_id(bus.keys.events)
    relay = _Relay(bus, since, token, on_progress)
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.run)
        try:
            yield
        except Exception as exc:  # raised below: the task group would wrap it in an exception group
            failure = exc
        else:
            with anyio.move_on_after(DRAIN_TIMEOUT_S), contextlib.suppress(RpcError):
                await relay.drain(await bus.transport.last_id(bus.keys.events))
        finally:
            tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
