"""Tuning knobs of the bus, passed explicitly (the runtime fills them from settings)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol import MAX_MESSAGE_BYTES

__all__ = ["BusOptions"]


class BusOptions(BaseModel):
    """Delivery parameters shared by producers and consumers of one deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = "meetara"
    """Prefix of every key; tests and deployments each use their own."""
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=1024)
    """Largest encoded message accepted on send and on receive."""
    inbox_maxlen: int = Field(default=100_000, ge=10)
    """Approximate bound of each agent inbox stream."""
    events_maxlen: int = Field(default=10_000, ge=10)
    """Approximate bound of the events stream."""
    reply_maxlen: int = Field(default=1_000, ge=10)
    """Approximate bound of each caller's reply stream."""
    dlq_maxlen: int = Field(default=10_000, ge=10)
    """Approximate bound of the dead-letter stream."""
    reclaim_idle_ms: int = Field(default=30_000, ge=50)
    """A pending entry idle this long belongs to a dead consumer and is reclaimed."""
    heartbeat_ms: int = Field(default=5_000, ge=10)
    """How often a consumer refreshes the idle time of the entries it is working on."""
    max_deliveries: int = Field(default=5, ge=1)
    """Deliveries before a failing message is dead-lettered."""
    retry_base_ms: int = Field(default=1_000, ge=0)
    """First retry delay after a handler failure; doubles with each delivery."""
    result_ttl_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=1000)
    """How long a request's result is kept to answer redeliveries and repeated keys."""
    reply_ttl_ms: int = Field(default=3600 * 1000, ge=1000)
    """Reply streams of callers that went away expire after this."""
    block_ms: int = Field(default=2_000, ge=10)
    """Longest a reader blocks before looping (bounds shutdown latency)."""
    batch_size: int = Field(default=64, ge=1)
    """Most entries a consumer takes in one read."""

    @model_validator(mode="after")
    def _heartbeat_beats_reclaim(self) -> BusOptions:
        if self.heartbeat_ms * 2 > self.reclaim_idle_ms:
            raise ValueError(
                f"heartbeat_ms ({self.heartbeat_ms}) must be at most half of reclaim_idle_ms "
                f"({self.reclaim_idle_ms}), or live consumers get their work reclaimed"
            )
        return self
