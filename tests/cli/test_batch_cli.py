"""`meetara submit --domains … --wait` and `meetara batch …` against a swarm on the test Redis."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import agents.conductor.agent as conductor_module
from agents.conductor import ConductorAgent
from runtime import Settings, open_swarm
from runtime.testing import fast_options
from tests.agents.fake_agents import FAKES, Fake, Script
from tests.cli.test_cli import meetara

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture(autouse=True)
def script(monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    monkeypatch.setattr(conductor_module, "SCAN_INTERVAL_S", 0.1)
    Fake.script = Script()
    yield Fake.script


async def test_a_batch_is_submitted_followed_to_its_end_and_shown(child_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings.load(
        bus_url=child_env["MEETARA_BUS_URL"],
        bus=fast_options(child_env["MEETARA_BUS__NAMESPACE"]),
        artifact_url=str(tmp_path / "artifacts"),
        data_dir=tmp_path / "data",
        models_dir=tmp_path / "models",
    )
    async with open_swarm(settings, [ConductorAgent, *FAKES]):
        submitted = await anyio.to_thread.run_sync(
            lambda: meetara(
                "submit", "--domains", "general_health, nutrition,fitness", "--samples", "40", "--wait", env=child_env
            )
        )
        match = re.search(r"batch ([0-9a-f]{32}): 3 jobs", submitted.stdout)
        assert submitted.returncode == 0 and match, submitted.stdout + submitted.stderr
        batch_id = match[1]
        shown = await anyio.to_thread.run_sync(lambda: meetara("batch", "status", batch_id, env=child_env))
        cancelled = await anyio.to_thread.run_sync(lambda: meetara("batch", "cancel", batch_id, env=child_env))
        unknown = await anyio.to_thread.run_sync(lambda: meetara("batch", "status", "0123456789abcdef", env=child_env))

    assert f"batch {batch_id}: 3 done" in submitted.stdout
    assert [line.split()[1] for line in shown.stdout.splitlines() if " done " in line] == [
        "general_health",
        "nutrition",
        "fitness",
    ], shown.stdout
    assert cancelled.returncode == 0 and cancelled.stdout.count("already done") == 3
    assert unknown.returncode == 1 and "no batch '0123456789abcdef'" in unknown.stderr
    assert {a.count for a in Fake.script.arguments("generate")} == {40}  # type: ignore[attr-defined]
