"""Encoding and decoding envelopes, with size limits and errors a human can act on."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from protocol._errors import (
    InvalidRequest,
    MessageTooLarge,
    ParseError,
    UnsupportedVersion,
    summarize_validation_error,
)
from protocol._messages import BusMeta, Envelope
from protocol._version import MAX_MESSAGE_BYTES, PROTOCOL_VERSION

__all__ = ["decode_envelope", "encode_envelope", "envelope_adapter", "salvage_meta"]

envelope_adapter: TypeAdapter[Envelope] = TypeAdapter(Envelope)
"""The one decoder of envelopes."""


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def encode_envelope(envelope: Envelope, *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """JSON bytes of an envelope; raises ``MessageTooLarge`` above ``max_bytes``."""
    body = envelope.model_dump_json(exclude_none=True).encode()
    if len(body) > max_bytes:
        raise MessageTooLarge(
            f"message is {len(body)} bytes, over the {max_bytes}-byte limit; "
            "send large payloads as artifact references",
            data={"size": len(body), "limit": max_bytes},
        )
    return body


def decode_envelope(body: bytes | str, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """Validate JSON bytes into an ``Envelope``.

    Raises:
        MessageTooLarge: the body is over ``max_bytes``.
        ParseError: the body is not JSON.
        InvalidRequest: the JSON is not a valid envelope (with the failing fields in ``data``).
        UnsupportedVersion: the sender speaks another major protocol version.
    """
    if len(body) > max_bytes:
        raise MessageTooLarge(
            f"message is {len(body)} bytes, over the {max_bytes}-byte limit",
            data={"size": len(body), "limit": max_bytes},
        )
    try:
        envelope = envelope_adapter.validate_json(body)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise ParseError("message body is not valid JSON") from None
        raise InvalidRequest(
            f"invalid envelope: {exc.error_count()} error(s)",
            data={"errors": summarize_validation_error(exc)},
        ) from None
    if _major(envelope.meta.protocol_version) != _major(PROTOCOL_VERSION):
        raise UnsupportedVersion(
            f"protocol version {envelope.meta.protocol_version!r} is not supported "
            f"(this side speaks {PROTOCOL_VERSION!r})"
        )
    return envelope


def salvage_meta(body: bytes | str) -> tuple[BusMeta | None, Any]:
    """Best-effort metadata and JSON-RPC id from an envelope that failed to decode.

    Lets a receiver send an error response for a malformed request instead of leaving the
    caller to time out. Returns ``(None, None)`` when nothing usable is there.
    """
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(raw, dict):
        return None, None
    try:
        meta = BusMeta.model_validate(raw.get("meta"))
    except ValidationError:
        return None, None
    message = raw.get("message")
    request_id = message.get("id") if isinstance(message, dict) else None
    if not isinstance(request_id, int | str) or isinstance(request_id, bool):
        request_id = None
    return meta, request_id
