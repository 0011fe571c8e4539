"""Agents on an embedded swarm: listing, typed calls, clear errors, tool errors, progress."""

from __future__ import annotations

import errno

import anyio
import anyio.to_thread
import pytest

from protocol import (
    INVALID_PARAMS,
    InvalidParams,
    ProgressNotification,
    ProgressParams,
    RpcError,
    ToolModel,
    Unavailable,
)
from runtime import Agent, CallContext, ToolError, ToolFailed, follow_progress, open_swarm, tool

pytestmark = pytest.mark.anyio


class AddIn(ToolModel):
    a: int
    b: int


class AddOut(ToolModel):
    total: int


class Calculator(Agent):
    name = "calculator"

    @tool(read_only=True)
    async def add(self, params: AddIn) -> AddOut:
        """Add two integers."""
        return AddOut(total=params.a + params.b)

    @tool(read_only=True)
    async def divide(self, params: AddIn) -> AddOut:
        """Integer division; dividing by zero is a tool error the caller can read."""
        if params.b == 0:
            raise ToolError("cannot divide by zero", data={"hint": "use b != 0"})
        return AddOut(total=params.a // params.b)

    @tool(read_only=True)
    async def count(self, params: AddIn, ctx: CallContext) -> AddOut:
        """Count to a, reporting progress."""
        for i in range(1, params.a + 1):
            await ctx.progress(i, params.a, f"step {i}")
        return AddOut(total=params.a)

    @tool(read_only=True)
    async def count_in_a_thread(self, params: AddIn, ctx: CallContext) -> AddOut:
        """Count to a in a worker thread, reporting progress with a measurement from there."""
        report = ctx.progress_reporter()

        def work() -> int:
            for i in range(1, params.a + 1):
                report(i, params.a, f"step {i}", meta={"half": i / 2})
            return params.a

        return AddOut(total=await anyio.to_thread.run_sync(work))

    @tool(read_only=True)
    async def grouped(self, params: AddIn) -> AddOut:
        """Fails inside a task group: a tool error (b=0), a full disk (b=1), a forbidden folder (b=2)."""
        async with anyio.create_task_group():
            if params.b == 0:
                raise ToolError("cannot divide by zero")
            if params.b == 2:
                raise PermissionError(errno.EACCES, "Permission denied", "/srv/models")
            raise OSError(errno.ENOSPC, "No space left on device", "/srv/models/x.gguf")

    @tool(read_only=True)
    async def lie(self, params: AddIn) -> AddOut:
        """Returns the wrong type (a defect the bus retries, then dead-letters)."""
        return params  # type: ignore[return-value]


async def test_list_and_call_typed(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), [Calculator]) as swarm:
        (instance,) = await swarm.client.agents()
        assert instance.name == "calculator" and instance.tools == [
            "add",
            "count",
            "count_in_a_thread",
            "divide",
            "grouped",
            "lie",
        ]
        tools = await swarm.client.list_tools("calculator")
        assert [t.name for t in tools] == ["add", "count", "count_in_a_thread", "divide", "grouped", "lie"]
        out = await swarm.client.call_model("calculator", "add", AddIn(a=2, b=3), AddOut)
        assert out.total == 5
        result = await swarm.client.call("calculator", "add", {"a": 1, "b": 1})
        assert result.content[0].text == '{"total":2}'


@pytest.mark.parametrize(
    ("tool_name", "arguments", "message"),
    [
        ("nope", {}, "agent 'calculator' has no tool 'nope'"),
        ("add", {"a": 1}, "b: Field required"),
        ("add", {"a": 1, "b": 2, "c": 3}, "c: Extra inputs are not permitted"),
        ("add", {"a": "x", "b": 2}, "a: Input should be a valid integer"),
    ],
)
async def test_bad_calls_get_invalid_params_with_reasons(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tool_name: str, arguments: dict[str, object], message: str
) -> None:
    async with open_swarm(settings_factory(memory_url), [Calculator]) as swarm:
        with pytest.raises(InvalidParams, match=message) as info:
            await swarm.client.call("calculator", tool_name, arguments)
    assert info.value.code == INVALID_PARAMS


async def test_tool_error_is_a_readable_result(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), [Calculator]) as swarm:
        result = await swarm.client.call("calculator", "divide", {"a": 1, "b": 0})
        assert result.is_error
        assert result.content[0].text == "cannot divide by zero"
        assert result.structured_content == {"error": "cannot divide by zero", "hint": "use b != 0"}
        with pytest.raises(ToolFailed, match=r"calculator\.divide: cannot divide by zero"):
            await swarm.client.call_model("calculator", "divide", {"a": 1, "b": 0}, AddOut)


async def test_defective_tool_is_dead_lettered_not_hung(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), [Calculator]) as swarm:
        with pytest.raises(RpcError, match="failed on all 3 deliveries: TypeError"):
            await swarm.client.call("calculator", "lie", {"a": 1, "b": 1})
        assert len(await swarm.bus.dead_letters()) == 1


async def test_progress_notifications_reach_the_events_stream(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), [Calculator]) as swarm:
        since = await swarm.bus.transport.last_id(swarm.bus.keys.events)
        await swarm.client.call("calculator", "count", {"a": 3, "b": 0}, progress_token="tok-1")
        seen = []
        with anyio.fail_after(5):
            async for record in swarm.bus.events(since=since):
                if isinstance(record.envelope.message, ProgressNotification):
                    seen.append(record.envelope.message.params)
                    if len(seen) == 3:
                        break
    assert [(p.progress_token, p.progress, p.total) for p in seen] == [("tok-1", i, 3) for i in (1, 2, 3)]


async def test_progress_from_a_worker_thread_is_followed_until_the_call_returns(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str
) -> None:
    async with open_swarm(settings_factory(memory_url), [Calculator]) as swarm:
        seen: list[ProgressParams] = []

        async def on_progress(params: ProgressParams) -> None:
            seen.append(params)

        async with follow_progress(swarm.bus, "tok-2", on_progress):
            await swarm.client.call("calculator", "count_in_a_thread", {"a": 3, "b": 0}, progress_token="tok-2")
            await swarm.client.call("calculator", "count", {"a": 2, "b": 0}, progress_token="another call")
        # Every notification published before the block ended, and only the followed call's.
        assert [(p.progress, p.total, p.meta) for p in seen] == [(i, 3, {"half": i / 2}) for i in (1, 2, 3)]


async def test_calling_an_agent_that_is_not_running_fails_fast(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(memory_url), [Calculator]) as swarm:
        with pytest.raises(Unavailable, match="no live instance of agent 'conductor'"):
            await swarm.client.call("conductor", "list_domains", {})


async def test_a_tool_error_or_full_disk_inside_a_task_group_is_a_tool_error_not_a_redelivery(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str
) -> None:
    async with open_swarm(settings_factory(memory_url), [Calculator]) as swarm:
        divided = await swarm.client.call("calculator", "grouped", {"a": 1, "b": 0})
        full = await swarm.client.call("calculator", "grouped", {"a": 1, "b": 1})
        forbidden = await swarm.client.call("calculator", "grouped", {"a": 1, "b": 2})
    assert divided.is_error and divided.content[0].text == "cannot divide by zero"
    assert full.is_error
    assert full.content[0].text == ("storage refused a write /srv/models/x.gguf: No space left on device")
    assert (full.structured_content or {})["errno"] == "ENOSPC"
    assert forbidden.content[0].text == "storage refused access to /srv/models: Permission denied"
