"""Redis clients: one pooled client for commands, a dedicated connection per blocking read.

A cancelled blocking command can leave a shared connection one reply behind (a known redis-py
asyncio hazard), so every XREAD/XREADGROUP with BLOCK runs on a connection of its own that is
thrown away on cancellation or error. BLOCK is always finite and shorter than the socket timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from bus._transport import GroupMissing
from protocol import Unavailable

__all__ = ["BlockingPool", "open_client", "redact_url", "translate_errors"]

MAX_BLOCK_MS = 5_000
"""Longest BLOCK a reader uses; callers loop, so shutdown is never more than this away."""

_SOCKET_MARGIN_S = 10.0


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_client(url: str, *, blocking: bool = False) -> aioredis.Redis:
    """A client for ``redis://`` or ``rediss://`` (auth, db and TLS options come from the URL)."""
    socket_timeout = MAX_BLOCK_MS / 1000 + _SOCKET_MARGIN_S if blocking else _SOCKET_MARGIN_S
    return aioredis.from_url(
        url,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=0 if blocking else 30,
        single_connection_client=blocking,
    )


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn connection-level redis errors into ``Unavailable`` naming the (redacted) URL."""
    try:
        yield
    except redis_errors.ResponseError as exc:
        if str(exc).startswith("NOGROUP"):
            raise GroupMissing(str(exc)) from exc
        raise
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Unavailable(f"cannot reach Redis at {redact_url(url)}: {reason}") from exc


class BlockingPool:
    """Dedicated single-connection clients for blocking reads, reused only after clean use."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._idle: list[aioredis.Redis] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[aioredis.Redis]:
        client = self._idle.pop() if self._idle else open_client(self._url, blocking=True)
        clean = False
        try:
            yield client
            clean = True
        finally:
            if clean and not self._closed:
                self._idle.append(client)
            else:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await client.aclose()
