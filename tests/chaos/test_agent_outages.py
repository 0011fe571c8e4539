"""Agents away for minutes: the job waits for them instead of failing, up to a horizon."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from agents.testing import tiny_job_env
from protocol.agents.conductor import SubmitJobOutput
from runtime import SwarmClient, connect
from runtime.testing import AGENTS, ProcessSwarm, log_events
from tests.chaos.conftest import checkpoint_steps, job_state, settings_of, wait_for_state

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(900)]

OUTAGE_S = 180.0
TRAINING = {"max_steps": 8, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2}


def _log_events(swarm: ProcessSwarm, name: str, event: str) -> list[dict[str, object]]:
    lines = log_events(swarm.log_text(name))
    return [e for e in lines if e.get("event") == event]


async def test_a_gpu_host_down_three_minutes_mid_training_returns_as_a_new_container_and_the_job_completes(
    chaos_env: dict[str, str], chaos_client: SwarmClient, tmp_path: Path, tiny_gguf: Path
) -> None:
    """SIGKILLed between checkpoints, back 3 minutes later under a new instance id (``meetara agent``).

    The Conductor's call waits in the agent's durable inbox: no attempt is spent, and the new
    instance takes the dead one's unfinished request at once (it has been idle far longer than
    ``reclaim_idle_ms``) and resumes training from its checkpoint.
    """
    data_dir = Path(chaos_env["MEETARA_DATA_DIR"])
    with ProcessSwarm(chaos_env, tmp_path / "swarm") as swarm:
        spec = {"target": "general_health", "base_model": str(tiny_gguf), "samples": 40, "training": TRAINING}
        job_id = (await chaos_client.call_model("conductor", "submit_job", spec, SubmitJobOutput)).job_id
        with anyio.fail_after(600):
            while not any(s >= 2 for s in checkpoint_steps(data_dir)):
                await anyio.sleep(0.05)
        swarm.kill("gpu_optimization")
        await anyio.sleep(OUTAGE_S)  # the outage itself: a time horizon, not a guess at speed
        during = await job_state(chaos_client, job_id)
        swarm.start("gpu_optimization", container=True)
        job = await wait_for_state(chaos_client, job_id, {"done", "failed"})
        conductor_log = swarm.log_text("conductor")
        trained_by = _log_events(swarm, "gpu_optimization", "agents running")

    assert during.state == "train" and during.step("train").attempts == 1, during.error
    assert job.state == "done", f"{job.error}\n{conductor_log[-3000:]}"
    train = job.step("train")
    assert train.attempts == 1 and train.output["resumed_from_step"] >= 2
    assert train.output["metrics"]["steps"] == TRAINING["max_steps"]
    # The restarted agent is a new instance, not the killed one under its old name.
    assert [e["instance"] for e in trained_by][-1] != "chaos-gpu_optimization"
    assert '"step failed; retrying"' not in conductor_log


async def test_a_job_whose_agent_never_returns_fails_at_the_horizon_naming_it_and_resumes_once_it_is_back(
    child_env: dict[str, str], tmp_path: Path, tiny_gguf: Path, model_cache: Path
) -> None:
    horizon_s = 20.0
    env = tiny_job_env(child_env, tmp_path / "job", model_cache, agent_wait_s={"train": horizon_s})
    without_gpu = tuple(a for a in AGENTS if a != "gpu_optimization")
    async with connect(settings_of(env), sender="chaos-test") as bus:
        client = SwarmClient(bus, timeout=30.0)
        with ProcessSwarm(env, tmp_path / "swarm", agents=without_gpu) as swarm:
            spec = {"target": "general_health", "base_model": str(tiny_gguf), "samples": 40, "training": TRAINING}
            job_id = (await client.call_model("conductor", "submit_job", spec, SubmitJobOutput)).job_id
            with anyio.fail_after(600):
                while (waiting := await job_state(client, job_id)).step("train").waiting_for is None:
                    assert waiting.state not in ("failed", "done"), waiting.error
                    await anyio.sleep(0.2)
            failed = await wait_for_state(client, job_id, {"failed", "done"})

            swarm.start("gpu_optimization", container=True)
            with anyio.fail_after(600):  # up, as a new user would check with `meetara agents`
                while not await client.agents("gpu_optimization"):
                    await anyio.sleep(0.2)
            await client.call("conductor", "resume_job", {"job_id": job_id})
            done = await wait_for_state(client, job_id, {"done", "failed"})

    assert failed.state == "failed" and failed.error
    assert failed.error.startswith("train: no live instance of agent 'gpu_optimization' for "), failed.error
    assert "resume_job continues the job" in failed.error
    waited = re.search(r"for (\d+) s", failed.error)
    assert waited and int(waited[1]) >= horizon_s, failed.error  # it waited out the whole horizon
    assert failed.step("train").attempts == 1 and failed.step("data").attempts == 1
    assert done.state == "done", done.error
    assert done.step("data").attempts == 1  # the resume went on from the train step
