"""The agent host: liveness records, lifecycle events, graceful stop with work in flight."""

from __future__ import annotations

import anyio
import pytest

from bus import Bus, open_transport
from protocol import AgentEventNotification, ToolModel
from runtime import Agent, AgentHost, LivenessRegistry, SwarmClient, tool

pytestmark = pytest.mark.anyio


class NapIn(ToolModel):
    seconds: float


class NapOut(ToolModel):
    slept: float


class Sleeper(Agent):
    name = "sleeper"
    concurrency = 2

    @tool(read_only=True)
    async def nap(self, params: NapIn) -> NapOut:
        """Sleep, then answer."""
        await anyio.sleep(params.seconds)
        return NapOut(slept=params.seconds)


async def test_liveness_record_and_lifecycle_events(settings_factory, bus_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(bus_url)
    async with Bus(open_transport(bus_url), options=settings.bus, sender="t") as bus:
        host = AgentHost(bus, [Sleeper], settings=settings)
        async with anyio.create_task_group() as tg:
            await tg.start(host.run)
            (instance,) = await LivenessRegistry(bus).instances("sleeper")
            assert instance.instance_id == settings.instance_id
            assert instance.tools == ["nap"] and instance.concurrency == 2 and instance.in_flight == 0
            host.stop()
        assert await LivenessRegistry(bus).instances() == []
        kinds = []
        with anyio.fail_after(5):
            async for record in bus.events(since="0"):
                message = record.envelope.message
                assert isinstance(message, AgentEventNotification)
                kinds.append(message.params.kind)
                if len(kinds) == 2:
                    break
        assert kinds == ["agent_started", "agent_stopped"]


async def test_stop_lets_in_flight_work_finish_within_the_grace(settings_factory, bus_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(bus_url, shutdown_grace_s=5.0)
    async with Bus(open_transport(bus_url), options=settings.bus, sender="t") as bus:
        host = AgentHost(bus, [Sleeper], settings=settings)
        client = SwarmClient(bus)
        answers: list[NapOut] = []
        async with anyio.create_task_group() as tg:
            await tg.start(host.run)

            async def ask() -> None:
                answers.append(await client.call_model("sleeper", "nap", NapIn(seconds=0.5), NapOut))

            tg.start_soon(ask)
            with anyio.fail_after(5):
                while not (await LivenessRegistry(bus).instances("sleeper"))[0].in_flight and not answers:
                    await anyio.sleep(0.02)
                    await host._announce_all()
            host.stop()
        assert answers == [NapOut(slept=0.5)]


async def test_liveness_record_expires_when_refreshes_stop(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    # A TTL a busy machine's event loop meets (refreshes come at a third of it), outlived twice over.
    settings = settings_factory(memory_url, liveness_ttl_s=1.5)
    async with Bus(open_transport(memory_url), options=settings.bus, sender="t") as bus:
        host = AgentHost(bus, [Sleeper], settings=settings)
        async with anyio.create_task_group() as tg:
            await tg.start(host.run)
            assert await LivenessRegistry(bus).instances()
            await anyio.sleep(3.0)
            assert await LivenessRegistry(bus).instances(), "a live host keeps refreshing its record"
            tg.cancel_scope.cancel()  # a crash: no withdrawal
        await anyio.sleep(1.6)
        assert await LivenessRegistry(bus).instances() == []
