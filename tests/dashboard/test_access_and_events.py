"""The dashboard's access rules (the MCP gateway's), its read-only surface, and its live events stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from agents.cost_monitor import CostMonitorAgent
from protocol import AgentInstance, JobEvent, JobEventNotification, RequestTimeout
from protocol.agents.conductor import JobSummary, ListJobsOutput
from runtime import EmbeddedSwarm, Settings, open_swarm
from runtime.dashboard import ViewSource, build_dashboard_app, dashboard_server, token_cookie
from runtime.mcp_gateway import GatewayOptions, HttpServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

TOKEN = "dash-token-7c1e"


async def serving(server: HttpServer) -> AsyncIterator[str]:
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture
async def swarm(settings_factory, memory_url: str) -> AsyncIterator[EmbeddedSwarm]:  # type: ignore[no-untyped-def]
    settings: Settings = settings_factory(memory_url)
    async with open_swarm(settings, [CostMonitorAgent]) as swarm:
        yield swarm


async def test_the_token_is_required_and_traded_for_an_http_only_cookie_once(swarm: EmbeddedSwarm) -> None:
    options = GatewayOptions(token=TOKEN)
    server = dashboard_server(swarm.client, host="127.0.0.1", port=0, options=options)
    async for url in serving(server):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            missing = await http.get("/")
            assert missing.status_code == 401 and "?token=" in missing.text
            assert (await http.get("/", headers={"Authorization": "Bearer nope"})).status_code == 401
            assert (await http.get("/?token=nope")).status_code == 401
            assert (await http.get("/events")).status_code == 401
            assert (await http.get("/api/view")).status_code == 401

            traded = await http.get("/?token=" + TOKEN + "&x=1")
            assert traded.status_code == 303 and traded.headers["location"] == "/?x=1"  # the token leaves the URL
            cookie = traded.headers["set-cookie"]
            assert cookie.startswith(f"{token_cookie(server.port)}={TOKEN}")  # one per port: dashboards coexist
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie
            page = await http.get("/")  # the client kept the cookie
            assert page.status_code == 200 and "<h2>Jobs</h2>" in page.text
            # The redirect stays on this site whatever the path looks like.
            offsite = httpx.URL(url).copy_with(raw_path=f"//evil.example/?token={TOKEN}".encode())
            redirected = await http.get(offsite)
            assert redirected.status_code == 303 and redirected.headers["location"] == "/evil.example/"

        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            view = await http.get("/api/view", headers={"Authorization": f"Bearer {TOKEN}"})
            assert view.status_code == 200
            body = view.json()
            # The agents that are not running leave their sections empty and say why; the rest is filled.
            assert "no live instance of agent 'conductor'" in body["problems"]["jobs"]
            assert "gguf_creation" in body["problems"]["models"]
            assert body["budgets"]["periods"] and [a["name"] for a in body["agents"]] == ["cost_monitor"]


async def test_the_dashboard_is_read_only_and_checks_host_and_origin(swarm: EmbeddedSwarm) -> None:
    options = GatewayOptions(token=TOKEN, allowed_origins=("https://ops.example",))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async for url in serving(dashboard_server(swarm.client, host="127.0.0.1", port=0, options=options)):
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth) as http:
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                refused = await http.request(method, "/api/view", json={})
                assert refused.status_code == 405 and refused.text == "the dashboard is read-only"
            assert (await http.get("/", headers={"Host": "evil.example"})).status_code == 421
            assert (await http.get("/", headers={"Origin": "https://evil.example"})).status_code == 403
            assert (await http.get("/", headers={"Origin": "https://ops.example"})).status_code == 200
            # Nothing on the page offers an action: no forms, no buttons.
            page = (await http.get("/")).text
            assert "<form" not in page and "<button" not in page


async def read_events(response: httpx.Response, job_id: str, count: int) -> list[tuple[str, JobEvent]]:
    seen: list[tuple[str, JobEvent]] = []
    event_id = kind = ""
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "job":
            event = JobEvent.model_validate(json.loads(line[6:]))
            if event.job_id == job_id:
                seen.append((event_id, event))
                if len(seen) == count:
                    return seen
    raise AssertionError(f"the stream ended after {len(seen)} events")


async def test_job_events_stream_live_and_a_reconnect_resumes_after_the_last_event_it_saw(
    swarm: EmbeddedSwarm,
) -> None:
    options = GatewayOptions()  # loopback without a token: allowed, as for the MCP gateway
    job_id = "ab12cd34"
    published = 0

    async def publish() -> None:
        nonlocal published
        published += 1
        event = JobEvent(job_id=job_id, kind="progress", step="train", progress=published, data={"loss": 1 / published})
        await swarm.bus.publish_event(JobEventNotification(params=event))

    async for url in serving(dashboard_server(swarm.client, host="127.0.0.1", port=0, options=options)):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            with anyio.fail_after(60):
                async with http.stream("GET", "/events") as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    async with anyio.create_task_group() as tg:
                        # Published until the stream has one: the subscription starts with the response.
                        async def keep_publishing() -> None:
                            while True:
                                await publish()
                                await anyio.sleep(0.2)

                        tg.start_soon(keep_publishing)
                        ((first_id, first),) = await read_events(response, job_id, 1)
                        tg.cancel_scope.cancel()
            assert first.progress is not None and first.data["loss"] == 1 / first.progress

            # Published while no one listened: the browser's Last-Event-ID brings them back, in order.
            for _ in range(5):
                await publish()
            with anyio.fail_after(60):
                async with http.stream("GET", "/events", headers={"Last-Event-ID": first_id}) as response:
                    resumed = await read_events(response, job_id, published - int(first.progress))
            assert [e.progress for _, e in resumed] == list(range(int(first.progress) + 1, published + 1))


class FailingJobCalls:
    """A client whose Conductor lists two jobs and then fails to describe either."""

    def __init__(self, swarm: EmbeddedSwarm) -> None:
        self.bus = swarm.bus
        self.real = swarm.client

    async def agents(self) -> list[AgentInstance]:
        return await self.real.agents()

    async def call_model(self, agent: str, tool: str, arguments: dict[str, Any], output: type[Any], **_: Any) -> Any:
        if tool == "list_jobs":
            jobs = [
                JobSummary(
                    job_id=job_id, scope="domain", target="general_health", state="train", created_at=0, updated_at=0
                )
                for job_id in ("aaaa1111", "bbbb2222")
            ]
            return ListJobsOutput(jobs=jobs)
        if tool == "job_status":
            raise RequestTimeout(f"conductor did not answer about {arguments['job_id']}")
        return await self.real.call_model(agent, tool, arguments, output)


async def test_jobs_that_cannot_be_described_are_named_and_the_page_still_renders(swarm: EmbeddedSwarm) -> None:
    source = ViewSource(FailingJobCalls(swarm))  # type: ignore[arg-type]
    app = build_dashboard_app(source, swarm.bus, host="127.0.0.1", port=8000, options=GatewayOptions())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
        page = await http.get("/")
        assert page.status_code == 200
        view = (await http.get("/api/view")).json()
    assert view["jobs"] == []
    assert "job aaaa1111: conductor did not answer" in view["problems"]["jobs"]
    assert "job bbbb2222: conductor did not answer" in view["problems"]["jobs"]
    assert view["budgets"]["periods"]  # the other sections are filled as usual
