"""Redis Streams backend (split by role: connection, scripts, transport)."""

from bus._redis._transport import RedisTransport

__all__ = ["RedisTransport"]
