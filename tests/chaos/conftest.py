"""Chaos-test fixtures: the environment and in-test client of a swarm of killable agent processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from agents.testing import tiny_job_env
from protocol.agents.conductor import JobRecord
from runtime import Settings, SwarmClient, connect
from runtime.testing import CpuHog, fast_options


@pytest.fixture
def chaos_env(child_env: dict[str, str], tmp_path: Path, model_cache: Path, crisis_cache: Path) -> dict[str, str]:
    return tiny_job_env(child_env, tmp_path, model_cache)


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.load(
        bus_url=env["MEETARA_BUS_URL"],
        bus=fast_options(env["MEETARA_BUS__NAMESPACE"]),
        artifact_url=env["MEETARA_ARTIFACT_URL"],
        catalog_dir=Path(env["MEETARA_CATALOG_DIR"]),
        data_dir=Path(env["MEETARA_DATA_DIR"]),
        models_dir=Path(env["MEETARA_MODELS_DIR"]),
        request_timeout_s=30.0,
    )


@pytest.fixture
async def chaos_client(chaos_env: dict[str, str]) -> AsyncIterator[SwarmClient]:
    async with connect(settings_of(chaos_env), sender="chaos-test") as bus:
        yield SwarmClient(bus, timeout=30.0)


async def job_state(client: SwarmClient, job_id: str) -> JobRecord:
    # Waits in the Conductor's durable inbox if no instance is live right now (one is restarting,
    # or a busy host let its presence lapse): a chaos test polls through such moments.
    return await client.call_model("conductor", "job_status", {"job_id": job_id}, JobRecord, require_live=False)


async def wait_for_state(client: SwarmClient, job_id: str, states: set[str], timeout: float = 600) -> JobRecord:
    with anyio.fail_after(timeout):
        while True:
            job = await job_state(client, job_id)
            if job.state in states:
                return job
            await anyio.sleep(0.2)


def checkpoint_steps(data_dir: Path) -> list[int]:
    """Steps of the training checkpoints on disk (``step-0000004.safetensors`` → 4)."""
    return sorted(int(p.stem.split("-")[1]) for p in data_dir.rglob("step-*.safetensors"))


@pytest.fixture(autouse=True)
def busy_machine() -> Iterator[None]:
    """Every chaos test runs beside a CPU hog on every core: none may pass only on an idle machine.

    ``MEETARA_TEST_CPU_HOG`` sets the number of spinning processes (0: none; default: one per core).
    """
    processes = os.environ.get("MEETARA_TEST_CPU_HOG")
    with CpuHog(int(processes) if processes else None):
        yield
