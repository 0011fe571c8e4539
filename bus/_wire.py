"""The stream-entry layout: a magic, a layout version and the JSON envelope body."""

from __future__ import annotations

from bus._transport import Fields
from protocol import (
    MAX_MESSAGE_BYTES,
    WIRE_MAGIC,
    WIRE_VERSION,
    Envelope,
    ParseError,
    UnsupportedVersion,
    decode_envelope,
    encode_envelope,
)

__all__ = ["BODY", "decode_fields", "encode_fields", "raw_body"]

MAGIC = b"magic"
VERSION = b"v"
BODY = b"body"


def encode_fields(envelope: Envelope, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Fields:
    """Stream-entry fields for an envelope (raises ``MessageTooLarge``)."""
    return {
        MAGIC: WIRE_MAGIC,
        VERSION: WIRE_VERSION,
        BODY: encode_envelope(envelope, max_bytes=max_bytes),
    }


def raw_body(fields: Fields) -> bytes | None:
    """The body field if the entry looks like ours, for salvaging metadata from bad entries."""
    if fields.get(MAGIC) != WIRE_MAGIC:
        return None
    return fields.get(BODY)


def decode_fields(fields: Fields, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """The envelope in a stream entry; raises an ``RpcError`` subclass naming the defect."""
    if not fields:
        raise ParseError("stream entry is empty (deleted or trimmed before delivery)")
    if fields.get(MAGIC) != WIRE_MAGIC:
        raise ParseError("stream entry is not a MeeTARA message (missing or wrong magic field)")
    version = fields.get(VERSION)
    if version != WIRE_VERSION:
        raise UnsupportedVersion(
            f"stream entry layout version {version!r} is not supported (expected {WIRE_VERSION!r})"
        )
    body = fields.get(BODY)
    if body is None:
        raise ParseError("stream entry has no body field")
    return decode_envelope(body, max_bytes=max_bytes)
