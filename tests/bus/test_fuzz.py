"""Hypothesis-fuzzed raw stream entries: the consumer never crashes and every one is accounted for."""

from __future__ import annotations

import json
import uuid

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import Bus, MemoryBroker, open_transport
from protocol import CallToolParams, CallToolRequest, ResponseMessage, ResultResponse
from runtime.testing import fast_options

MAGIC = {b"magic": b"meetara", b"v": b"1"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

raw_fields = st.one_of(
    st.dictionaries(st.binary(min_size=1, max_size=12), st.binary(max_size=64), min_size=1, max_size=4),
    st.binary(max_size=200).map(lambda body: {**MAGIC, b"body": body}),
    json_values.map(lambda v: {**MAGIC, b"body": json.dumps(v).encode()}),
    st.fixed_dictionaries(
        {"meta": st.fixed_dictionaries({"sender": st.text(max_size=10)}), "message": json_values}
    ).map(lambda v: {**MAGIC, b"body": json.dumps(v).encode()}),
)


async def drive(url: str, batch: list[dict[bytes, bytes]]) -> None:
    async def echo(envelope: object, delivery: object) -> ResponseMessage | None:
        message = getattr(envelope, "message", None)
        if isinstance(message, CallToolRequest):
            return ResultResponse(id=message.id, result={})
        return None

    namespace = f"fuzz-{uuid.uuid4().hex[:8]}"
    async with Bus(open_transport(url), options=fast_options(namespace), sender="fuzz") as bus:
        inbox = bus.keys.inbox("worker")
        for fields in batch:
            await bus.transport.add(inbox, fields, maxlen=10_000)
        async with anyio.create_task_group() as tg:
            sub = bus.subscribe("worker", echo, consumer="c1")  # type: ignore[arg-type]
            await tg.start(sub.run)
            request = CallToolRequest(params=CallToolParams(name="after", arguments={}))
            assert isinstance(await bus.request("worker", request, timeout=10), ResultResponse)
            with anyio.fail_after(10):
                while await bus.transport.pending_count(inbox, "worker"):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        letters = await bus.dead_letters(count=10_000)
        # Every raw entry was either dead-lettered with a reason, or was a valid message.
        assert len(letters) <= len(batch)
        assert all(letter.error.message for letter in letters)
        await bus.transport.delete([inbox, bus.keys.dead_letters])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(raw_fields, min_size=1, max_size=8))
def test_fuzzed_entries_on_memory(batch: list[dict[bytes, bytes]]) -> None:
    name = uuid.uuid4().hex
    try:
        anyio.run(drive, f"memory://{name}", batch)
    finally:
        MemoryBroker.drop(name)


@pytest.mark.redis
def test_fuzzed_entries_on_redis(redis_url: str) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batch=st.lists(raw_fields, min_size=1, max_size=8))
    def run(batch: list[dict[bytes, bytes]]) -> None:
        anyio.run(drive, redis_url, batch)

    run()
