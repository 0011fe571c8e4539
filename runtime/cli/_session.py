"""How client commands reach the swarm (over Redis, or by starting an embedded one) and serve HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import anyio
import typer

from runtime._client import SwarmClient
from runtime._discovery import agent_names, load_agent_class
from runtime._lifecycle import stop_on_signal
from runtime._settings import Settings
from runtime._swarm import connect, open_swarm
from runtime.mcp_gateway import GatewayConfigError, HttpServer

__all__ = ["client_session", "http_option_errors", "is_embedded", "serve_until_signal"]


def is_embedded(settings: Settings) -> bool:
    return settings.bus_url.startswith("memory://")


@contextlib.asynccontextmanager
async def client_session(settings: Settings) -> AsyncIterator[SwarmClient]:
    """A client of the running swarm; on ``memory://`` every installed agent runs in this process."""
    if is_embedded(settings):
        classes = [load_agent_class(n) for n in agent_names()]
        async with open_swarm(settings, classes) as swarm:
            yield swarm.client
        return
    async with connect(settings, sender="cli") as bus:
        yield SwarmClient(bus, timeout=settings.request_timeout_s)


async def serve_until_signal(server: HttpServer) -> None:
    """Serve until SIGINT/SIGTERM."""
    async with anyio.create_task_group() as tg:
        await tg.start(stop_on_signal, server.stop)
        await server.serve()
        tg.cancel_scope.cancel()


@contextlib.contextmanager
def http_option_errors() -> Iterator[None]:
    """A refused ``--http`` binding (no token off loopback, a busy port…) as a usage error on it."""
    try:
        yield
    except GatewayConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--http") from None
