"""Redis Streams backend (split by role: connection, scripts, transport)."""
