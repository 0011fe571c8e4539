"""Fuzzed tool arguments and raw stream entries to every agent process: none crashes, every bad
message gets a JSON-RPC error with a reason or lands in the dead-letter stream with one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import RpcError, ToolSpec
from runtime import SwarmClient, connect
from runtime.testing import ProcessSwarm
from tests.bus.test_fuzz import json_values, raw_fields
from tests.chaos.conftest import settings_of

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]

EVIL_STRINGS = st.sampled_from(["../../etc/passwd", "/etc/shadow", "a\x00b", "x" * 5000, "", "mental_health", "🙂"])


def _value_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of roughly the right shape, often wrong: the near misses validation must catch."""
    kind = schema.get("type")
    wrong = json_values | EVIL_STRINGS
    if kind == "string":
        return EVIL_STRINGS | st.text(max_size=40) | wrong
    if kind in ("integer", "number"):
        return st.sampled_from([-1, 0, 10**12, 2**63, -(2**70), 0.5]) | wrong
    return wrong


def arguments(spec: ToolSpec) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = spec.input_schema.get("properties", {})
    shaped = st.fixed_dictionaries({}, optional={name: _value_for(p) for name, p in properties.items()})
    junk = st.dictionaries(st.text(max_size=12), json_values, max_size=4)
    return shaped | junk


def destructive_or_costly(spec: ToolSpec) -> bool:
    """Tools whose valid calls would start real work: fuzz them with invalid arguments only."""
    return not spec.annotations.read_only_hint


def valid(spec: ToolSpec, args: dict[str, Any]) -> bool:
    required = spec.input_schema.get("required", [])
    return all(name in args for name in required)


@pytest.fixture
def swarm(chaos_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessSwarm]:
    with ProcessSwarm(chaos_env, tmp_path / "swarm") as running:
        yield running


def test_fuzzed_tool_arguments_and_raw_entries_crash_no_agent(swarm: ProcessSwarm, chaos_env: dict[str, str]) -> None:
    config = settings_of(chaos_env)
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(connect(config, sender="fuzzer")) as bus,
    ):
        client = SwarmClient(bus, timeout=20.0)
        tools = {agent: portal.call(client.list_tools, agent) for agent in swarm.agents}
        targets = [(agent, spec) for agent, specs in tools.items() for spec in specs]
        outcomes: dict[str, int] = {"result": 0, "tool error": 0, "rpc error": 0}

        @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def call_with_fuzzed_arguments(data: st.DataObject) -> None:
            agent, spec = data.draw(st.sampled_from(targets), label="tool")
            args = data.draw(arguments(spec), label="arguments")
            if destructive_or_costly(spec) and valid(spec, args):
                args = {**args, "__fuzz__": True}  # unknown key: must be refused, never run
            try:
                result = portal.call(lambda: client.call(agent, spec.name, args, timeout=20.0))
            except RpcError as exc:
                assert exc.message, f"{agent}.{spec.name}({args!r}) failed without a reason"
                assert "timed out" not in exc.message and "no live instance" not in exc.message, exc.message
                outcomes["rpc error"] += 1
                return
            if result.is_error:
                assert result.content and result.content[0].text.strip()  # type: ignore[union-attr]
                outcomes["tool error"] += 1
            else:
                assert spec.annotations.read_only_hint, f"{agent}.{spec.name} ran on fuzzed input {args!r}"
                outcomes["result"] += 1

        call_with_fuzzed_arguments()

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(agent=st.sampled_from(swarm.agents), batch=st.lists(raw_fields, min_size=1, max_size=6))
        def write_raw_entries(agent: str, batch: list[dict[bytes, bytes]]) -> None:
            inbox = bus.keys.inbox(agent)
            for fields in batch:
                portal.call(lambda f=fields: bus.transport.add(inbox, f, maxlen=100_000))

        write_raw_entries()

        async def settle() -> list[Any]:
            with anyio.fail_after(60):
                for agent in swarm.agents:
                    while await bus.transport.pending_count(bus.keys.inbox(agent), agent):
                        await anyio.sleep(0.05)
                    await client.ping(agent, timeout=10)  # alive and answering after the junk
            return await bus.dead_letters(count=10_000)

        letters = portal.call(settle)
    alive = {name: proc.poll() is None for name, proc in swarm.procs.items()}
    assert all(alive.values()), {name: swarm.log_tail(name) for name, up in alive.items() if not up}
    assert all(n == 1 for n in swarm.starts.values())  # and none was restarted
    assert letters and all(letter.error.message for letter in letters)
    assert outcomes["rpc error"] + outcomes["tool error"] > 0, outcomes
    print(json.dumps(outcomes))
