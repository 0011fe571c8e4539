"""Redis clients: one pooled client for commands, a dedicated connection per blocking read.

A cancelled blocking command can leave a shared connection one reply behind (a known redis-py
asyncio hazard), so every XREAD/XREADGROUP with BLOCK runs on a connection of its own that is
thrown away on cancellation or error. BLOCK is always finite and shorter than the socket timeout.

``redis+sentinel://`` and ``rediss+sentinel://`` URLs name Redis Sentinels and a service instead of
one server: every new connection asks the Sentinels for the service's current primary, so a
client follows a failover by reconnecting (redis-py's Sentinel support).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.sentinel import Sentinel

from bus._transport import GroupMissing
from protocol import Unavailable

__all__ = [
    "SENTINEL_SCHEMES",
    "BlockingPool",
    "SentinelTarget",
    "close_client",
    "open_client",
    "redact_url",
    "translate_errors",
]

SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
SENTINEL_PORT = 26379

MAX_BLOCK_MS = 5_000
"""Longest BLOCK a reader uses; callers loop, so shutdown is never more than this away."""

_SOCKET_MARGIN_S = 10.0


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at:
        # An unescaped / ? or # in a password ends the host part early: then nothing of it is shown.
        return url if "@" not in url.partition("://")[2] else f"{parts.scheme}://***"
    if ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` URL names.

    ``rediss+sentinel://`` speaks TLS to the Sentinels and to the data nodes (whose certificates
    must match the addresses the Sentinels announce); ``?ssl_ca_certs=`` is the only option read.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ssl_ca_certs: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelTarget:
        parts = urlsplit(url)
        shown = redact_url(url)
        if parts.scheme not in SENTINEL_SCHEMES:
            raise ValueError(f"not a Sentinel URL: {shown}")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        sentinels: list[tuple[str, int]] = []
        for number, host in enumerate(hosts.split(","), 1):
            try:  # urlsplit reads [IPv6]:port and range-checks the port
                address = urlsplit(f"//{host.strip()}")
                name, port = address.hostname, address.port
            except ValueError:
                name = None
            if not name:
                raise ValueError(f"Sentinel address {number} of {shown} is not HOST[:PORT]")
            sentinels.append((name, port or SENTINEL_PORT))
        path = [unquote(p) for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(f"a Sentinel URL names its service: {shown} (…/SERVICE or …/SERVICE/DB)")
        query = parse_qs(parts.query)
        if unknown := sorted(set(query) - {"ssl_ca_certs"}):
            raise ValueError(f"unknown option(s) {', '.join(unknown)} in {shown} (only ssl_ca_certs is read)")
        return cls(
            sentinels=tuple(sentinels),
            service=path[0],
            db=int(path[1]) if len(path) == 2 else 0,
            username=unquote(user) or None,
            password=unquote(password) or None,
            tls=parts.scheme == "rediss+sentinel",
            ssl_ca_certs=query.get("ssl_ca_certs", [None])[0],
        )

    def primary(self, **connection: Any) -> aioredis.Redis:
        """A client of the service's primary, whichever server that is at each (re)connection."""
        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": self.ssl_ca_certs} if self.tls else {}
        timeouts = {k: connection[k] for k in ("socket_timeout", "socket_connect_timeout")}
        # The Sentinels are asked without the data nodes' credentials (they usually have none).
        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs={**timeouts, **tls}, **tls)  # type: ignore[no-untyped-call]
        return sentinel.master_for(  # type: ignore[no-any-return]
            self.service, db=self.db, username=self.username, password=self.password, **connection
        )


def open_client(url: str, *, blocking: bool = False) -> aioredis.Redis:
    """A client for ``redis://``, ``rediss://`` or a Sentinel URL (auth, db and TLS options come from the URL)."""
    socket_timeout = MAX_BLOCK_MS / 1000 + _SOCKET_MARGIN_S if blocking else _SOCKET_MARGIN_S
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        # A private pool per blocking client: the connection is as much its own as with
        # single_connection_client, which a Sentinel-managed pool does not take.
        return SentinelTarget.parse(url).primary(
            decode_responses=False,
            socket_timeout=socket_timeout,
            socket_connect_timeout=5.0,
            health_check_interval=0 if blocking else 30,
        )
    return aioredis.from_url(
        url,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=0 if blocking else 30,
        single_connection_client=blocking,
    )


async def close_client(client: aioredis.Redis) -> None:
    """Close a client of ``open_client``, with the connections to the Sentinels it asks."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    with anyio.CancelScope(shield=True):  # a cancelled reader's client is closed all the same
        try:
            await client.aclose()
        finally:
            for sentinel in manager.sentinels if manager is not None else ():
                await sentinel.aclose()


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
                    await close_client(client)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await close_client(client)
