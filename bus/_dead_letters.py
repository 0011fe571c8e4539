"""The dead-letter stream: what failed, why, and the original entry for replay."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict

from bus._transport import Entry, Fields
from protocol import ErrorData

__all__ = ["DeadLetter", "letter_fields", "parse_letter"]

_META = b"dlq:"
_ORIG = b"orig:"


class DeadLetter(BaseModel):
    """One dead-lettered message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """Entry id in the dead-letter stream."""
    stream: str
    """Full key of the stream the message came from."""
    group: str
    """Consumer group that gave up on it."""
    entry_id: str
    """Its id in the original stream."""
    consumer: str
    """The consumer that dead-lettered it."""
    deliveries: int
    """How many times it was delivered."""
    error: ErrorData
    """Why it was dead-lettered."""
    failed_at: float
    """When (epoch seconds)."""
    original: dict[str, str]
    """The original fields, decoded for display (invalid UTF-8 replaced)."""
    raw: dict[bytes, bytes]
    """The original fields byte for byte, for replay."""


def letter_fields(*, stream: str, group: str, entry: Entry, consumer: str, deliveries: int, error: ErrorData) -> Fields:
    fields: Fields = {
        _META + b"stream": stream.encode(),
        _META + b"group": group.encode(),
        _META + b"entry_id": entry.id.encode(),
        _META + b"consumer": consumer.encode(),
        _META + b"deliveries": str(deliveries).encode(),
        _META + b"error": error.model_dump_json().encode(),
        _META + b"failed_at": repr(time.time()).encode(),
    }
    for key, value in entry.fields.items():
        fields[_ORIG + key] = value
    return fields


def parse_letter(entry: Entry) -> DeadLetter:
    meta = {k[len(_META) :].decode(): v for k, v in entry.fields.items() if k.startswith(_META)}
    raw = {k[len(_ORIG) :]: v for k, v in entry.fields.items() if k.startswith(_ORIG)}
    return DeadLetter(
        id=entry.id,
        stream=meta.get("stream", b"").decode(),
        group=meta.get("group", b"").decode(),
        entry_id=meta.get("entry_id", b"").decode(),
        consumer=meta.get("consumer", b"").decode(),
        deliveries=int(meta.get("deliveries", b"0")),
        error=ErrorData.model_validate_json(meta.get("error", b'{"code":0,"message":"?"}')),
        failed_at=float(meta.get("failed_at", b"0")),
        original={k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()},
        raw=raw,
    )
