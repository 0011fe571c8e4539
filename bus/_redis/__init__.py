"""Redis Streams backend (split by role: connection, scripts, transport)."""

from bus._redis._connection import SENTINEL_SCHEMES, SentinelTarget, redact_url
from bus._redis._transport import RedisTransport

__all__ = ["SENTINEL_SCHEMES", "RedisTransport", "SentinelTarget", "redact_url"]
