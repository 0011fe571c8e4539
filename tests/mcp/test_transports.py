"""`meetara mcp` over stdio and streamable HTTP, driven by the MCP SDK's own clients."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TextIO

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from agents.conductor import ConductorAgent
from agents.cost_monitor import CostMonitorAgent
from runtime import Settings, agent_names, open_swarm
from runtime.mcp_gateway import (
    MANIFEST_URI,
    Gateway,
    GatewayConfigError,
    GatewayOptions,
    HttpGateway,
    check_http_binding,
    parse_host_port,
)
from runtime.testing import free_port
from tests.mcp.toy_agents import Toy

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-4f9c"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def gateway_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An embedded swarm (memory://) writing under ``tmp_path``; JSON logs on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")}
    env.update(
        MEETARA_BUS_URL="memory://mcp",
        MEETARA_DATA_DIR=str(tmp_path / "data"),
        MEETARA_MODELS_DIR=str(tmp_path / "models"),
        MEETARA_ARTIFACT_URL=str(tmp_path / "artifacts"),
        MEETARA_LOG_FORMAT="json",
        **extra,
    )
    return env


@pytest.fixture
def stderr_log(tmp_path: Path) -> Iterator[TextIO]:
    with open(tmp_path / "stderr.log", "w") as log:
        yield log


async def test_stdio_subprocess_serves_the_tools_to_the_sdk_stdio_client(tmp_path: Path, stderr_log: TextIO) -> None:
    env = gateway_env(tmp_path, MEETARA_MCP_ALLOW_DESTRUCTIVE="false")
    params = StdioServerParameters(command=sys.executable, args=["-m", "runtime.cli", "mcp"], env=env, cwd=ROOT)
    with anyio.fail_after(90):
        # The initialize handshake, as desktop clients speak it today.
        async with Client(stdio_client(params, errlog=stderr_log), mode="legacy") as client:
            assert client.server_info is not None and client.server_info.name == "meetara"
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"conductor_submit_job", "cost_monitor_cost_report", "gpu_optimization_train"} <= names
            assert {"swarm_run_job", "swarm_wait_job"} <= names
            assert names.isdisjoint({"conductor_cancel_job", "cost_monitor_set_budget", "gguf_creation_deploy"})

            domains = await client.call_tool("conductor_list_domains", {"category": "technology"})
            assert not domains.is_error
            assert [d["name"] for d in domains.structured_content["domains"]][:2] == ["programming", "ai_ml"]  # type: ignore[index]
            unknown = await client.call_tool("conductor_describe_domain", {"name": "mental_helth"})
            assert unknown.is_error and "did you mean 'mental_health'" in unknown.content[0].text  # type: ignore[union-attr]
            refused = await client.call_tool("cost_monitor_set_budget", {"period": "day", "usd": 5})
            assert refused.is_error and "destructive" in refused.content[0].text  # type: ignore[union-attr]
            manifest = (await client.read_resource(MANIFEST_URI)).contents[0]
            assert '"models": []' in manifest.text  # type: ignore[union-attr]
    stderr_log.flush()
    assert '"event": "agents running"' in (tmp_path / "stderr.log").read_text()


def test_stdio_stdout_carries_only_the_mcp_stream(tmp_path: Path) -> None:
    """Every byte on stdout is JSON-RPC, from start-up to exit; the logs go to stderr."""
    requests = [
        INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "swarm_agents", "arguments": {}}},
    ]
    log = tmp_path / "stderr.log"
    with (
        open(log, "w") as sink,
        subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "mcp"],
            cwd=ROOT,
            env=gateway_env(tmp_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        ) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
        proc.stdin.flush()
        # stdin stays open until the last reply is in: end of input ends the session (and its calls).
        lines = [proc.stdout.readline() for _ in range(2)]
        proc.stdin.close()
        lines += proc.stdout.readlines()
        assert proc.wait(90) == 0, log.read_text()[-3000:]
    replies = [json.loads(line) for line in lines]  # raises on anything but JSON
    assert [r.get("id") for r in replies] == [1, 2] and all(r["jsonrpc"] == "2.0" for r in replies)
    assert replies[0]["result"]["serverInfo"]["name"] == "meetara"
    agents = replies[1]["result"]["structuredContent"]["agents"]
    assert sorted({a["name"] for a in agents}) == agent_names()
    assert '"event": "agents running"' in log.read_text()


@contextlib.contextmanager
def http_gateway_process(tmp_path: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    env = gateway_env(tmp_path, MEETARA_MCP_TOKEN=TOKEN)
    with open(tmp_path / "http.log", "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "mcp", "--http", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=sink,
            text=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


async def _until_listening(url: str) -> None:
    with anyio.fail_after(60):
        while True:
            try:
                async with httpx.AsyncClient() as http:
                    await http.get(url)
                return
            except httpx.TransportError:
                await anyio.sleep(0.2)


@contextlib.asynccontextmanager
async def sdk_http_client(url: str, token: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def test_http_needs_the_bearer_token_and_serves_the_same_calls_with_it(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with http_gateway_process(tmp_path, port) as proc:
        await _until_listening(url)
        async with httpx.AsyncClient() as http:
            missing = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
            assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
            wrong = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        with anyio.fail_after(60):
            async with sdk_http_client(url, TOKEN) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert {"conductor_submit_job", "cost_monitor_cost_report", "conductor_cancel_job"} <= names
                prices = await client.call_tool("cost_monitor_price_table", {"gpu": "A100"})
                assert not prices.is_error and prices.structured_content["offers"]  # type: ignore[index]
                manifest = (await client.read_resource(MANIFEST_URI)).contents[0]
                assert '"models": []' in manifest.text  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # a clean stop: the embedded swarm shut down too
    assert '"event": "agents stopped"' in (tmp_path / "http.log").read_text()


async def test_http_checks_host_and_origin_and_streams_progress(settings_factory, memory_url: str) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = settings_factory(memory_url)
    options = GatewayOptions(token=TOKEN, allowed_origins=("https://app.example",))
    async with open_swarm(settings, [Toy, ConductorAgent, CostMonitorAgent]) as swarm:
        http_gateway = HttpGateway(Gateway(swarm.client, options).server, host="127.0.0.1", port=0, options=options)
        async with anyio.create_task_group() as tg:
            await tg.start(http_gateway.serve)
            url = http_gateway.url
            auth = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient() as http:
                rebound = await http.post(url, json=INITIALIZE, headers={**auth, "Host": "evil.example"})
                assert rebound.status_code == 421
                foreign = await http.post(url, json=INITIALIZE, headers={**auth, "Origin": "https://evil.example"})
                assert foreign.status_code == 403
                allowed = await http.post(url, json=INITIALIZE, headers={**auth, "Origin": "https://app.example"})
                assert allowed.status_code == 200
            with anyio.fail_after(30):
                async with sdk_http_client(url, TOKEN) as client:
                    seen: list[float] = []

                    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                        seen.append(progress)

                    arguments = {"n": 3, "delay": 0.05}
                    counted = await client.call_tool("toy_count", arguments, progress_callback=on_progress)
                    assert counted.structured_content == {"reached": 3, "cancelled": False}
                    assert seen == [1, 2, 3]  # over the request's SSE stream, before the result
            http_gateway.stop()


@pytest.mark.parametrize(
    ("bind", "options", "problem"),
    [
        ("127.0.0.1:8765", GatewayOptions(), None),
        ("[::1]:8765", GatewayOptions(), None),
        ("192.0.2.7:8765", GatewayOptions(), "without a bearer token"),
        ("192.0.2.7:8765", GatewayOptions(token="t"), None),
        ("0.0.0.0:8765", GatewayOptions(token="t"), "MEETARA_MCP_ALLOWED_HOSTS"),
        ("0.0.0.0:8765", GatewayOptions(token="t", allowed_hosts=("mcp.example:*",)), None),
        ("8765", GatewayOptions(), "expected HOST:PORT"),
        ("host:99999", GatewayOptions(), "expected HOST:PORT"),
    ],
)
def test_http_refuses_to_expose_the_swarm(bind: str, options: GatewayOptions, problem: str | None) -> None:
    if problem is None:
        host, _ = parse_host_port(bind)
        check_http_binding(host, options)
        return
    with pytest.raises(GatewayConfigError, match=problem):
        check_http_binding(parse_host_port(bind)[0], options)


@pytest.mark.anyio
async def test_the_bearer_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check goes through hmac.compare_digest, so response time does not leak the token."""
    from runtime.mcp_gateway import StaticTokenVerifier

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verifier = StaticTokenVerifier("s3cret-token")
    assert await verifier.verify_token("s3cret-token") is not None
    assert await verifier.verify_token("s3cret-tokeX") is None
    assert await verifier.verify_token("") is None
    assert compared == [(b"s3cret-token", b"s3cret-token"), (b"s3cret-tokeX", b"s3cret-token"), (b"", b"s3cret-token")]
