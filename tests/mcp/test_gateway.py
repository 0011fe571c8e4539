"""The MCP gateway through the SDK's own in-memory client, on small embedded swarms (no models)."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from agents.cost_monitor import CostMonitorAgent
from agents.gguf_creation import GgufCreationAgent
from protocol import JobEvent, new_id
from protocol.agents.cost_monitor import CostReportInput, CostReportOutput, SetBudgetInput
from runtime import AgentHost, Settings, connect
from runtime.mcp_gateway import MANIFEST_URI, REPORT_TEMPLATE, GatewayOptions, JobProgress
from tests.mcp.conftest import mcp_session
from tests.mcp.toy_agents import EchoIn, EchoOut, Late, ScriptedConductor, Toy

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

Progress = list[tuple[float, float | None, str | None]]


def recorder() -> tuple[Progress, Any]:
    seen: Progress = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    return seen, on_progress


@pytest.fixture
def settings(settings_factory, memory_url: str) -> Settings:  # type: ignore[no-untyped-def]
    return settings_factory(memory_url)


async def test_tools_are_the_live_agents_own_typed_tools_namespaced_by_agent(settings: Settings) -> None:
    async with mcp_session(settings, [Toy, CostMonitorAgent]) as (_, client):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        agent_tools = {"toy_echo", "toy_count", "toy_wipe", "cost_monitor_cost_report", "cost_monitor_set_budget"}
        assert agent_tools <= set(tools)
        assert {"swarm_run_job", "swarm_wait_job", "swarm_agents", "swarm_dlq_purge"} <= set(tools)

        echo = tools["toy_echo"]
        assert echo.description == "Say the text back unchanged."
        assert echo.input_schema == EchoIn.model_json_schema()
        assert echo.output_schema == EchoOut.model_json_schema(mode="serialization")
        report = tools["cost_monitor_cost_report"]
        assert report.input_schema == CostReportInput.model_json_schema()
        assert report.output_schema == CostReportOutput.model_json_schema(mode="serialization")
        assert tools["cost_monitor_set_budget"].input_schema == SetBudgetInput.model_json_schema()
        hints = {name: t.annotations for name, t in tools.items()}
        assert all(h is not None for h in hints.values())
        assert hints["toy_echo"].read_only_hint and not hints["toy_echo"].destructive_hint  # type: ignore[union-attr]
        for destructive in ("toy_wipe", "cost_monitor_set_budget", "swarm_dlq_purge"):
            h = hints[destructive]
            assert h is not None and h.destructive_hint and not h.read_only_hint, destructive
        for writes in ("toy_count", "swarm_run_job", "swarm_dlq_replay"):
            h = hints[writes]
            assert h is not None and not h.read_only_hint and not h.destructive_hint, writes

        said = await client.call_tool("toy_echo", {"text": "hi"})
        assert not said.is_error and said.structured_content == {"text": "hi"}
        assert json.loads(said.content[0].text) == {"text": "hi"}  # type: ignore[union-attr]
        cost = await client.call_tool("cost_monitor_cost_report", {"period": "all", "by": "job"})
        assert not cost.is_error and cost.structured_content["rows"] == []  # type: ignore[index]
        live = await client.call_tool("swarm_agents", {})
        assert sorted(a["name"] for a in live.structured_content["agents"]) == ["cost_monitor", "toy"]  # type: ignore[index]

        # A new agent's tools appear with no gateway change; once it is gone, a call says so.
        async with connect(settings, sender="late") as bus:
            late = AgentHost(bus, [Late], settings=settings)
            await bus.start_task(late.run)
            names = {t.name for t in (await client.list_tools()).tools}
            assert "late_hello" in names
            hello = await client.call_tool("late_hello", {})
            assert hello.structured_content == {"text": "hello"}
            late.stop()
            await late.wait_stopped()
        assert "late_hello" not in {t.name for t in (await client.list_tools()).tools}
        gone = await client.call_tool("late_hello", {})
        assert gone.is_error
        assert "late.hello failed: no live instance of agent 'late'" in gone.content[0].text  # type: ignore[union-attr]


async def test_failures_are_error_results_with_a_clear_message_never_a_hang(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(memory_url, request_timeout_s=0.5)
    async with mcp_session(settings, [Toy]) as (_, client):
        started = time.monotonic()
        slow = await client.call_tool("toy_nap", {"seconds": 5})
        assert slow.is_error and time.monotonic() - started < 3
        assert "no response from agent 'toy' to tools/call within 0.5s" in slow.content[0].text  # type: ignore[union-attr]

        bad = await client.call_tool("toy_echo", {"txt": "hi"})
        assert bad.is_error and "invalid arguments for toy.echo" in bad.content[0].text  # type: ignore[union-attr]

        refused = await client.call_tool("swarm_run_job", {"target": "general_health"})
        assert refused.is_error
        assert "no live instance of agent 'conductor'" in refused.content[0].text  # type: ignore[union-attr]
        wrong = await client.call_tool("swarm_run_job", {"target": "general_health", "samples": 1})
        assert wrong.is_error and "invalid arguments for swarm_run_job: samples" in wrong.content[0].text  # type: ignore[union-attr]

        with pytest.raises(MCPError, match="unknown tool 'toy_nothing'"):
            await client.call_tool("toy_nothing", {})


async def test_agent_progress_reaches_the_client_and_cancelling_stops_the_agent(settings: Settings) -> None:
    async with mcp_session(settings, [Toy]) as (swarm, client):
        seen, on_progress = recorder()
        done = await client.call_tool("toy_count", {"n": 3}, progress_callback=on_progress)
        assert done.structured_content == {"reached": 3, "cancelled": False}
        assert seen == [(1, 3, "at 1"), (2, 3, "at 2"), (3, 3, "at 3")]  # all of it, before the result

        toy = swarm.host.agents[0]
        assert isinstance(toy, Toy)
        seen.clear()
        with anyio.fail_after(30), anyio.CancelScope() as scope:

            async def cancel_after_two(progress: float, total: float | None, message: str | None) -> None:
                await on_progress(progress, total, message)
                if len(seen) == 2:
                    scope.cancel()

            await client.call_tool("toy_count", {"n": 10_000, "delay": 0.02}, progress_callback=cancel_after_two)
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            await toy.cancelled.wait()  # the gateway passed the cancel on to the agent's tool


async def test_destructive_and_named_tools_can_be_switched_off(settings: Settings) -> None:
    options = {"allow_destructive": False, "disabled_tools": frozenset({"toy_echo"})}
    async with mcp_session(settings, [Toy, CostMonitorAgent], **options) as (_, client):
        names = {t.name for t in (await client.list_tools()).tools}
        assert names.isdisjoint({"toy_wipe", "toy_echo", "cost_monitor_set_budget", "swarm_dlq_purge"})
        assert {"toy_count", "cost_monitor_budget_status", "swarm_dlq_list"} <= names
        wipe = await client.call_tool("toy_wipe", {"text": "everything"})
        assert wipe.is_error and "destructive tools are disabled" in wipe.content[0].text  # type: ignore[union-attr]
        budget = await client.call_tool("cost_monitor_set_budget", {"period": "day", "usd": 1})
        assert budget.is_error and "MEETARA_MCP_ALLOW_DESTRUCTIVE" in budget.content[0].text  # type: ignore[union-attr]
        echo = await client.call_tool("toy_echo", {"text": "hi"})
        assert echo.is_error and "disabled in this gateway's configuration" in echo.content[0].text  # type: ignore[union-attr]


def test_gateway_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEETARA_MCP_TOKEN", "s3cret")
    monkeypatch.setenv("MEETARA_MCP_DISABLED_TOOLS", "conductor_cancel_job, gguf_creation_deploy")
    monkeypatch.setenv("MEETARA_MCP_ALLOW_DESTRUCTIVE", "false")
    monkeypatch.setenv("MEETARA_MCP_ALLOWED_HOSTS", "mcp.example:443")
    settings = Settings.load()
    assert "s3cret" not in repr(settings)
    options = GatewayOptions.from_settings(settings)
    assert options.token == "s3cret" and not options.allow_destructive
    assert options.disabled_tools == {"conductor_cancel_job", "gguf_creation_deploy"}
    assert options.allowed_hosts == ("mcp.example:443",) and options.allowed_origins == ()


async def test_run_job_follows_the_job_with_progress_and_returns_its_report(settings: Settings) -> None:
    async with mcp_session(settings, [ScriptedConductor]) as (_, client):
        seen, on_progress = recorder()
        result = await client.call_tool("swarm_run_job", {"target": "general_health"}, progress_callback=on_progress)
        assert not result.is_error, result.content
        assert result.structured_content["state"] == "done"  # type: ignore[index]
        values = [p for p, _, _ in seen]
        assert values == sorted(set(values)) and values[-1] == 7  # rising, one unit per pipeline step
        assert all(total == 7 for _, total, _ in seen)
        messages = [m for _, _, m in seen]
        job_id = result.structured_content["job_id"]  # type: ignore[index]
        assert messages[0] == f"job {job_id} submitted: domain job"
        assert "train 1/3" in messages and messages[-1] == "deployed"


async def test_cancelling_run_job_cancels_the_job_it_started(settings: Settings) -> None:
    async with mcp_session(settings, [ScriptedConductor]) as (swarm, client):
        conductor = swarm.host.agents[0]
        assert isinstance(conductor, ScriptedConductor)
        seen: list[str] = []
        with anyio.fail_after(30), anyio.CancelScope() as scope:

            async def cancel_in_training(progress: float, total: float | None, message: str | None) -> None:
                seen.append(message or "")
                if message == "train 2/3":
                    scope.cancel()

            await client.call_tool("swarm_run_job", {"target": "forever"}, progress_callback=cancel_in_training)
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            while not conductor.cancelled_jobs:
                await anyio.sleep(0.01)
        (job_id,) = conductor.cancelled_jobs
        assert seen[0].startswith(f"job {job_id} submitted")


async def test_following_a_job_ends_with_an_error_when_no_conductor_is_left(settings: Settings) -> None:
    async with mcp_session(settings, [Toy]) as (_, client), connect(settings, sender="conductor") as bus:
        conductor = AgentHost(bus, [ScriptedConductor], settings=settings)
        await bus.start_task(conductor.run)

        async def stop_the_conductor_in_training(progress: float, total: float | None, message: str | None) -> None:
            if message == "train 2/3":
                conductor.stop()

        with anyio.fail_after(30):
            result = await client.call_tool(
                "swarm_run_job", {"target": "forever"}, progress_callback=stop_the_conductor_in_training
            )
        await conductor.wait_stopped()
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "stopped following job" in text and "no Conductor is running" in text and "swarm_wait_job" in text


async def test_reports_and_the_manifest_are_resources(settings: Settings) -> None:
    async with mcp_session(settings, [ScriptedConductor, GgufCreationAgent]) as (_, client):
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == [REPORT_TEMPLATE]
        listed = [r.uri for r in (await client.list_resources()).resources]
        assert listed == [MANIFEST_URI]  # the scripted Conductor lists no jobs; its absence is not an error
        manifest = (await client.read_resource(MANIFEST_URI)).contents[0]
        assert isinstance(manifest, types.TextResourceContents) and manifest.mime_type == "application/json"
        assert json.loads(manifest.text)["models"] == []
        job_id = new_id()
        report = (await client.read_resource(REPORT_TEMPLATE.format(job_id=job_id))).contents[0]
        assert isinstance(report, types.TextResourceContents) and json.loads(report.text)["job_id"] == job_id
        with pytest.raises(MCPError, match="unknown resource"):
            await client.read_resource("meetara://nothing")


async def test_dead_letters_can_be_listed_and_purged(settings: Settings) -> None:
    async with mcp_session(settings, [Toy]) as (swarm, client):
        bus = swarm.bus
        await bus.transport.add(bus.keys.inbox("ghost"), {b"not": b"ours"}, maxlen=100)

        async def never(*_: object) -> None:
            raise AssertionError("malformed entries never reach the handler")

        await bus.subscribe("ghost", never, consumer="c", burst=True).run()  # type: ignore[arg-type]
        listed = await client.call_tool("swarm_dlq_list", {})
        (letter,) = listed.structured_content["letters"]  # type: ignore[index]
        assert letter["source"] == "ghost" and "not a MeeTARA" in letter["error"]
        both = await client.call_tool("swarm_dlq_purge", {"ids": [letter["id"]], "all": True})
        assert both.is_error and "give dead-letter ids or all=true" in both.content[0].text  # type: ignore[union-attr]
        purged = await client.call_tool("swarm_dlq_purge", {"all": True})
        assert purged.structured_content == {"deleted": 1}


def test_a_jobs_events_become_one_rising_progress() -> None:
    events = [
        ("submitted", {"state": "planned"}, 0.0),
        ("state_changed", {"state": "data"}, None),  # no rise over "submitted": not sent
        ("step_finished", {"step": "data"}, 0.99),
        ("state_changed", {"state": "data_qa"}, 1.0),
        ("state_changed", {"state": "train"}, 3.0),
        ("waiting", {"step": "train", "message": "waiting for gpu_optimization"}, 3.0),  # a nudge, to say it
        ("progress", {"step": "train", "progress": 5, "total": 10}, 3.5),
        ("progress", {"step": "train", "progress": 10, "total": 10}, 3.98),  # the step ends at step_finished
        ("progress", {"step": "train", "progress": 7, "total": 10}, None),  # a resumed count does not go back
        ("log", {"step": "train", "message": "attempt 1 failed"}, None),
        ("step_finished", {"step": "train"}, 3.99),
        ("progress", {"step": "convert", "message": "writing"}, None),  # no number to report
        ("step_finished", {"step": "deploy"}, 6.99),
        ("state_changed", {"state": "done", "terminal": True}, 7.0),
    ]
    progress = JobProgress()
    values, messages = [], []
    for kind, fields, _ in events:
        update = progress.update(JobEvent(job_id="j", kind=kind, **fields))  # type: ignore[arg-type]
        values.append(round(update[0], 2) if update else None)
        messages.append(update[1] if update else None)
    assert values == [expected for _, _, expected in events]
    assert "waiting for gpu_optimization" in messages
    assert progress.total == 7
