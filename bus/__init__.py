"""Message delivery for the swarm: one interface, a Redis Streams and an in-memory backend.

Semantics (both backends, one contract suite): an inbox stream per agent with a consumer
group; at-least-once with ack after the handler; reclaim of a dead consumer's work after an
idle timeout while live consumers heartbeat; dead letters for poison messages; request/reply
with correlation ids, deadlines and a stored result per request; an events stream any number
of watchers tail; bounded streams; every key under one namespace.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bus._bus import Bus, EventRecord
from bus._consumer import Delivery, Handler, Subscription
from bus._dead_letters import DeadLetter
from bus._keys import Keys
from bus._memory import MemoryBroker, MemoryTransport
from bus._options import BusOptions
from bus._transport import AutoclaimResult, CompleteResult, Entry, GroupMissing, Transport
from bus._wire import decode_fields, encode_fields

__all__ = [
    "AutoclaimResult",
    "Bus",
    "BusOptions",
    "CompleteResult",
    "DeadLetter",
    "Delivery",
    "Entry",
    "EventRecord",
    "GroupMissing",
    "Handler",
    "Keys",
    "MemoryBroker",
    "MemoryTransport",
    "Subscription",
    "Transport",
    "check_url",
    "decode_fields",
    "encode_fields",
    "open_transport",
]

_REDIS_SCHEMES = {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}


def check_url(url: str) -> str:
    """``url`` if ``open_transport`` takes it, else a ``ValueError`` saying why (nothing connects)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return url
    from bus._redis import SENTINEL_SCHEMES, SentinelTarget, redact_url

    if scheme in SENTINEL_SCHEMES:
        SentinelTarget.parse(url)
    elif scheme not in _REDIS_SCHEMES:
        raise ValueError(
            f"unsupported bus URL {redact_url(url)!r}: use memory://NAME, redis://HOST:PORT/DB, rediss://… "
            "or redis+sentinel://HOSTS/SERVICE"
        )
    return url


def open_transport(url: str) -> Transport:
    """The transport for a URL: ``memory://NAME``, ``redis://``, ``rediss://`` (TLS), ``unix://``, or
    ``redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE[/DB]`` (``rediss+sentinel://`` with TLS).

    Redis credentials, database and TLS options are read from the URL itself.
    """
    if urlsplit(check_url(url)).scheme == "memory":
        return MemoryTransport(url)
    from bus._redis import RedisTransport

    return RedisTransport(url)
