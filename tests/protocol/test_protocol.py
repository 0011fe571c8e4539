"""Wire contracts: round trips, strictness, size limits, error mapping."""

from __future__ import annotations

import json

import mcp_types
import pytest
from pydantic import BaseModel, ValidationError

from protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    AgentEventNotification,
    BusMeta,
    CallToolParams,
    CallToolRequest,
    CallToolResult,
    Envelope,
    ErrorData,
    ErrorResponse,
    InvalidRequest,
    JobEvent,
    JobEventNotification,
    ListToolsRequest,
    MessageTooLarge,
    ParseError,
    PingRequest,
    ProgressNotification,
    ProgressParams,
    RequestTimeout,
    ResultResponse,
    RpcError,
    TextContent,
    ToolSpec,
    UnsupportedVersion,
    decode_envelope,
    encode_envelope,
    error_from_exception,
    salvage_meta,
)

MESSAGES = [
    CallToolRequest(params=CallToolParams(name="generate", arguments={"domain": "sleep", "count": 5})),
    ListToolsRequest(),
    PingRequest(),
    ProgressNotification(params=ProgressParams(progress_token="t", progress=1, total=2, message="half")),
    JobEventNotification(params=JobEvent(job_id="j", kind="state_changed", state="train")),
    ResultResponse(id=1, result={"ok": True}),
    ErrorResponse(id="x", error=ErrorData(code=INVALID_PARAMS, message="bad")),
    ErrorResponse(id=None, error=ErrorData(code=INTERNAL_ERROR, message="unknown id")),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: object) -> None:
    envelope = Envelope(meta=BusMeta(sender="test", reply_to="reply:abc"), message=message)  # type: ignore[arg-type]
    decoded = decode_envelope(encode_envelope(envelope))
    assert decoded == envelope
    assert type(decoded.message) is type(message)


def test_wire_shape_is_mcp_camel_case() -> None:
    request = CallToolRequest(id=7, params=CallToolParams(name="t", arguments={"a_b": 1}))
    body = json.loads(encode_envelope(Envelope(meta=BusMeta(sender="s", reply_to="reply:x"), message=request)))
    assert body["message"] == {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "t", "arguments": {"a_b": 1}},
    }
    assert {"messageId", "replyTo", "traceId", "protocolVersion", "sentAt", "attempt"} <= set(body["meta"])


def test_our_tool_shapes_are_valid_mcp_types() -> None:
    spec = ToolSpec(name="t", description="d", input_schema={"type": "object"})
    mcp_types.Tool.model_validate(spec.model_dump(mode="json", exclude_none=True))
    result = CallToolResult(content=[TextContent(text="{}")], structured_content={}, is_error=False)
    mcp_result = mcp_types.CallToolResult.model_validate(result.model_dump(mode="json"))
    assert mcp_result.is_error is False


@pytest.mark.parametrize(
    ("body", "error", "fragment"),
    [
        (b"{nope", ParseError, "not valid JSON"),
        (
            b'{"meta":{"sender":"s"},"message":{"jsonrpc":"2.0","id":1,"method":"tools/explode"}}',
            InvalidRequest,
            "not a known message",
        ),
        (
            b'{"meta":{"sender":"s","sneaky":1},"message":{"jsonrpc":"2.0","id":1,"method":"ping"}}',
            InvalidRequest,
            "meta.sneaky",
        ),
        (
            b'{"meta":{"sender":"s"},"message":{"jsonrpc":"2.0","id":1,"method":"tools/call",'
            b'"params":{"name":"Bad Name!"}}}',
            InvalidRequest,
            "message.tools/call.params.name",
        ),
        (
            b'{"meta":{"sender":"s","protocolVersion":"meetara/2"},"message":{"jsonrpc":"2.0","id":1,"method":"ping"}}',
            UnsupportedVersion,
            "meetara/2",
        ),
    ],
)
def test_bad_envelopes_get_clear_errors(body: bytes, error: type[RpcError], fragment: str) -> None:
    with pytest.raises(error) as info:
        decode_envelope(body)
    assert fragment in info.value.message + json.dumps(info.value.data)


def test_size_limit_on_both_sides() -> None:
    envelope = Envelope(
        meta=BusMeta(sender="s"),
        message=CallToolRequest(params=CallToolParams(name="t", arguments={"x": "y" * 5000})),
    )
    with pytest.raises(MessageTooLarge, match="over the 4096-byte limit"):
        encode_envelope(envelope, max_bytes=4096)
    with pytest.raises(MessageTooLarge):
        decode_envelope(encode_envelope(envelope), max_bytes=4096)


def test_salvage_meta_recovers_reply_address_of_broken_requests() -> None:
    meta, request_id = salvage_meta(
        b'{"meta":{"sender":"s","replyTo":"reply:z"},"message":{"jsonrpc":"2.0","id":"q","method":"x"}}'
    )
    assert meta is not None and meta.reply_to == "reply:z" and request_id == "q"
    assert salvage_meta(b"garbage") == (None, None)
    assert salvage_meta(b'{"meta": 3}') == (None, None)


class Model(BaseModel):
    n: int


def test_error_mapping() -> None:
    try:
        Model.model_validate({"n": "x" * 10_000})
    except ValidationError as exc:
        data = error_from_exception(exc)
    assert data.code == INVALID_PARAMS
    assert "x" * 100 not in json.dumps(data.model_dump())  # the input is never echoed
    assert data.data == {
        "errors": [{"loc": "n", "msg": "Input should be a valid integer, unable to parse string as an integer"}]
    }
    internal = error_from_exception(ValueError("first line\nsecond line"))
    assert internal.code == INTERNAL_ERROR and internal.message == "ValueError: first line"
    timeout = RpcError.from_error_data(RequestTimeout("late").to_error_data())
    assert isinstance(timeout, RequestTimeout)
    unknown = RpcError.from_error_data(ErrorData(code=-1, message="odd"))
    assert type(unknown) is RpcError and unknown.code == -1


def test_error_codes_match_mcp() -> None:
    from protocol import CONNECTION_CLOSED, REQUEST_TIMEOUT

    assert (REQUEST_TIMEOUT, CONNECTION_CLOSED) == (mcp_types.REQUEST_TIMEOUT, mcp_types.CONNECTION_CLOSED)


def test_agent_events_decode() -> None:
    body = encode_envelope(
        Envelope(
            meta=BusMeta(sender="s"),
            message=AgentEventNotification.model_validate(
                {"params": {"kind": "agent_started", "agent": "conductor", "instanceId": "i1"}}
            ),
        )
    )
    assert isinstance(decode_envelope(body).message, AgentEventNotification)
