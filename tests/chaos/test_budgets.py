"""Budgets on the swarm of agent processes: a job over budget is refused, a spent budget pauses a
running job at a checkpoint, and resuming continues it from there."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agents.testing import tiny_catalog
from protocol.agents.conductor import JobRecord, JobReport, SubmitJobOutput
from protocol.agents.cost_monitor import BudgetStatus
from runtime import SwarmClient, ToolFailed
from runtime.testing import ProcessSwarm
from tests.chaos.conftest import checkpoint_steps, wait_for_state

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(900)]


async def test_a_job_over_budget_is_refused_and_a_spent_budget_pauses_a_job_until_resumed(
    chaos_env: dict[str, str], chaos_client: SwarmClient, tmp_path: Path, tiny_gguf: Path
) -> None:
    # Local compute at 1 cent per second, so every step costs something.
    env = {**chaos_env, "MEETARA_CATALOG_DIR": str(tiny_catalog(tmp_path / "priced", local_usd_per_hour=36.0))}
    client = chaos_client
    short = {"max_steps": 4, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2}
    spec = {"base_model": str(tiny_gguf), "samples": 40, "training": short}
    with ProcessSwarm(env, tmp_path / "swarm"):
        first = await client.call_model("conductor", "submit_job", {**spec, "target": "mental_health"}, SubmitJobOutput)
        done = await wait_for_state(client, first.job_id, {"done", "failed"})
        assert done.state == "done", done.error
        assert done.step("train").usd > 0

        # Measured training now prices the next job: a budget below it refuses the job outright.
        await client.call("cost_monitor", "set_budget", {"period": "day", "usd": 0.001})
        refused = await client.call("conductor", "submit_job", {**spec, "target": "general_health"})
        assert refused.is_error and "day budget" in refused.content[0].text  # type: ignore[union-attr]
        status = await client.call_model("cost_monitor", "budget_status", {}, BudgetStatus)
        assert status.stopped

        # A job admitted while there was budget pauses in the middle of training once the budget is
        # gone: training stops at a checkpoint, and resuming continues from it.
        await client.call("cost_monitor", "set_budget", {"period": "day", "usd": 1000.0})
        long = {"max_steps": 16, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2}
        second = await client.call_model(
            "conductor", "submit_job", {**spec, "target": "stress_management", "training": long}, SubmitJobOutput
        )
        await wait_for_state(client, second.job_id, {"train"})
        run_dir = Path(env["MEETARA_DATA_DIR"]) / "models" / "trained" / "healthcare" / "stress_management"
        with anyio.fail_after(600):
            while not checkpoint_steps(run_dir):
                await anyio.sleep(0.1)
        await client.call("cost_monitor", "set_budget", {"period": "day", "usd": 0.001})
        paused = await wait_for_state(client, second.job_id, {"paused_budget", "done", "failed"})
        assert paused.state == "paused_budget" and "budget" in (paused.error or "")
        assert paused.step("train").status == "failed" and paused.step("convert").attempts == 0

        with pytest.raises(ToolFailed, match="budget"):
            await client.call_model("conductor", "resume_job", {"job_id": second.job_id}, JobRecord)
        await client.call("cost_monitor", "set_budget", {"period": "day", "usd": 1000.0})
        await client.call("conductor", "resume_job", {"job_id": second.job_id})
        resumed = await wait_for_state(client, second.job_id, {"done", "failed", "paused_budget"})
        report = await client.call_model("conductor", "job_report", {"job_id": second.job_id}, JobReport)
    assert resumed.state == "done", resumed.error
    train = resumed.step("train")
    assert train.attempts == 2 and train.output["resumed_from_step"] > 0
    assert resumed.step("data").attempts == 1
    # Knowledge Transfer found mental_health similar enough: training started from its adapter.
    assert resumed.step("knowledge_transfer").output["domain"] == "mental_health"
    assert train.output["warm_started"] and report.warm_started_from == "mental_health"
