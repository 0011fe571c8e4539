"""The dashboard in a real browser: headless Chromium against a swarm that finished a job.

Chromium and chromedriver come from Debian's packages (`.ci/run` installs them); selenium drives
them. The screenshot is kept as a test artifact under ``$MEETARA_TEST_ARTIFACTS`` (default
``test-artifacts/``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import anyio
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from agents.conductor import ConductorAgent
from agents.cost_monitor import CostMonitorAgent
from agents.gpu_optimization import GpuOptimizationAgent
from agents.testing import tiny_catalog
from protocol import AgentEvent, AgentEventNotification, JobEvent, JobEventNotification
from protocol.agents.conductor import JobRecord, JobReport, SubmitJobOutput
from runtime import Settings, agent_names, load_agent_class, open_swarm
from runtime.dashboard import dashboard_server
from runtime.mcp_gateway import GatewayOptions

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("MEETARA_TEST_ARTIFACTS") or ROOT / "test-artifacts")
TOKEN = "browser-token-2b9d"
AGENTS = [load_agent_class(name) for name in agent_names()]


BROWSER_ARGUMENTS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
"""``--no-sandbox``: CI runs as root."""


def browser() -> webdriver.Chrome:
    """Debian's headless Chromium through its own chromedriver (nothing is downloaded)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        if os.environ.get("MEETARA_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required here (MEETARA_REQUIRE_BROWSER is set)")
        pytest.skip("chromium and chromium-driver (Debian's packages) are not installed")
    options = Options()
    options.binary_location = binary
    for argument in [*BROWSER_ARGUMENTS, "--window-size=1400,1800"]:
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def until(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], bool], horizon_s: float) -> None:
    WebDriverWait(driver, horizon_s, poll_frequency=0.2).until(condition)


@contextlib.contextmanager
def page(url: str) -> Iterator[webdriver.Chrome]:
    """The page open in the browser, once its script has the events stream open."""
    driver = browser()
    try:
        driver.get(url)
        until(driver, lambda d: d.find_element(By.ID, "live").text == "live", 60)
        yield driver
    finally:
        driver.quit()


async def test_chromium_shows_the_finished_job_its_loss_curve_and_the_deployed_model(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path, tiny_gguf: Path, crisis_cache: Path
) -> None:
    settings: Settings = settings_factory(
        memory_url, model_cache_dir=crisis_cache, catalog_dir=tiny_catalog(tmp_path / "catalog")
    )
    job = {
        "target": "general_health",
        "base_model": str(tiny_gguf),
        "samples": 40,
        "training": {"max_steps": 6, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2},
    }
    async with open_swarm(settings, AGENTS) as swarm:
        submitted = await swarm.client.call_model("conductor", "submit_job", job, SubmitJobOutput)
        with anyio.fail_after(600):
            while True:
                record = await swarm.client.call_model(
                    "conductor", "job_status", {"job_id": submitted.job_id}, JobRecord
                )
                if record.state in ("done", "failed"):
                    break
                await anyio.sleep(0.5)
        assert record.state == "done", record.error
        report = await swarm.client.call_model("conductor", "job_report", {"job_id": submitted.job_id}, JobReport)
        assert len(report.loss_curve) >= 2

        server = dashboard_server(swarm.client, host="127.0.0.1", port=0, options=GatewayOptions(token=TOKEN))
        screenshot = ARTIFACTS / "dashboard.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

        async def agent_event() -> None:
            event = AgentEvent(kind="agent_started", agent="conductor", instance_id="browser-test")
            await swarm.bus.publish_event(AgentEventNotification(params=event))

        def look(url: str) -> tuple[str, str]:
            """The page as the browser shows it once its events stream is open, and after live events."""
            # The token in the URL once, as a user opens it; the cookie carries it afterwards,
            # including on the events stream the page's script opens.
            with page(url) as driver:
                dom = driver.page_source
                driver.save_screenshot(str(screenshot))
                # An event re-renders the page from the server (the clock says when it was drawn).
                drawn = driver.find_element(By.ID, "as-of").text
                deadline = time.monotonic() + 60
                while driver.find_element(By.ID, "as-of").text == drawn:
                    assert time.monotonic() < deadline, "no live event re-rendered the page"
                    anyio.from_thread.run(agent_event)
                    with contextlib.suppress(TimeoutException):
                        until(driver, lambda d: d.find_element(By.ID, "as-of").text != drawn, 2)
                return dom, driver.page_source

        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            # The browser blocks: it runs in a thread while this event loop serves the page.
            dom, redrawn = await anyio.to_thread.run_sync(look, f"{server.url}/?token={TOKEN}")
            server.stop()

    assert f'data-job="{submitted.job_id}"' in redrawn and 'id="live">live<' in redrawn
    job_at = dom.index(f'data-job="{submitted.job_id}"')
    article = dom[job_at : dom.index("</article>", job_at)]
    assert 'data-state="done"' in article and "general_health" in article
    (model,) = report.models
    assert f">{model.qa_score:.1f}%<" in article and f"<td>{model.deployed_version}</td>" in article
    assert "QA report of meetara_general_health" in article  # from the job's own record
    assert all(f'data-step="{s}"' in article for s in ("data", "train", "convert", "model_qa", "deploy"))
    # The loss curve: an SVG with the run's points, drawn in the job's figure.
    svg_text = article[article.index("<svg") : article.index("</svg>") + len("</svg>")]
    svg = ElementTree.fromstring(svg_text)
    (line,) = [el for el in svg.iter() if el.tag.endswith("polyline")]
    assert len(line.attrib["points"].split()) == len(report.loss_curve)
    assert "training loss" in svg_text
    # The deployed model with its QA report: every check and evaluation reply with its verdict.
    models = dom[dom.index('id="models"') : dom.index('id="agents"')]
    assert 'data-model="meetara_general_health"' in models and "v1" in models
    start = models.index('class="evaluation"')
    evaluation = models[start : models.index("</details>", start)]
    # Each reply's row ends in its verdict and why (the checks' rows have no "why" under them).
    replies = evaluation.count("passed<div") + evaluation.count("failed<div")
    assert replies >= 1 and f"{replies} evaluation replies" in evaluation
    agents = dom[dom.index('id="agents"') : dom.index('id="dead-letters"')]
    assert all(f'data-agent="{a.name}"' in agents for a in AGENTS)
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_running_jobs_progress_and_loss_move_live_in_the_browser(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path, tiny_gguf: Path
) -> None:
    """No Data Generation agent: the job is planned and waits at its data step, running, for good."""
    settings: Settings = settings_factory(memory_url, catalog_dir=tiny_catalog(tmp_path / "catalog"))
    job = {"target": "general_health", "base_model": str(tiny_gguf), "samples": 40}
    async with open_swarm(settings, [ConductorAgent, CostMonitorAgent, GpuOptimizationAgent]) as swarm:
        submitted = await swarm.client.call_model("conductor", "submit_job", job, SubmitJobOutput)
        with anyio.fail_after(120):
            while (
                await swarm.client.call_model("conductor", "job_status", {"job_id": submitted.job_id}, JobRecord)
            ).step("data").status != "running":
                await anyio.sleep(0.2)

        async def progress(step: str, done: float, total: float, message: str | None = None, **data: float) -> None:
            event = JobEvent(
                job_id=submitted.job_id,
                kind="progress",
                step=step,
                progress=done,
                total=total,
                message=message,
                data=data,
            )
            await swarm.bus.publish_event(JobEventNotification(params=event))

        def watch(url: str) -> tuple[str, str]:
            with page(url) as driver:
                job = f'[data-job="{submitted.job_id}"]'

                def attribute(selector: str, name: str) -> str:  # looked up afresh: a re-render replaces it
                    return driver.find_element(By.CSS_SELECTOR, f"{job} {selector}").get_attribute(name) or ""

                anyio.from_thread.run(lambda: progress("data", 3, 8, "generated 3 of 8 batches"))
                bar = '.running[data-step="data"] progress'
                until(driver, lambda d: (attribute(bar, "value"), attribute(bar, "max")) == ("3", "8"), 30)
                message = driver.find_element(By.CSS_SELECTOR, f"{job} .progress-message").text
                # Training's loss, as the GPU agent reports it, draws the live curve point by point.
                for step, loss in enumerate([4.0, 3.1, 2.5, 2.2], start=1):
                    anyio.from_thread.run(lambda s=step, v=loss: progress("train", s, 4, loss=v))
                line = "svg.live-loss polyline"
                until(driver, lambda d: len(attribute(line, "points").split()) == 4, 30)
                return message, attribute(line, "points")

        server = dashboard_server(swarm.client, host="127.0.0.1", port=0, options=GatewayOptions())
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            message, points = await anyio.to_thread.run_sync(watch, f"{server.url}/")
            server.stop()

    assert message == "data: generated 3 of 8 batches"
    ys = [float(p.split(",")[1]) for p in points.split()]
    assert ys == sorted(ys)  # the loss falls, so the line goes down the chart (SVG's y grows downwards)
