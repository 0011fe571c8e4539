"""Stopping a process gracefully: one signal handler for agent hosts and the MCP gateway."""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
import anyio.abc
import structlog

__all__ = ["stop_on_signal"]


async def stop_on_signal(stop: Callable[[], None], *, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Call ``stop`` at the first SIGTERM or SIGINT: a graceful stop, in-flight work winds down."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            structlog.get_logger("runtime").info("stopping", signal=signal.Signals(signum).name)
            stop()
            return
