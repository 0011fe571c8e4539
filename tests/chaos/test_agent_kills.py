"""Agents that die or hang in the middle of a step: the job completes, each side effect once."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import anyio
import pytest

from agents.testing import tiny_catalog
from protocol import InvalidParams
from protocol.agents.conductor import SubmitJobOutput
from protocol.agents.cost_monitor import CostReportOutput
from runtime import SwarmClient
from runtime.testing import ProcessSwarm, log_events
from tests.chaos.conftest import checkpoint_steps, job_state, wait_for_state

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(1200)]

# Where each agent dies: held calls stop before their work or after it (work done, reply not
# sent — the worst case for duplicates); training dies between checkpoints.
HOLDS = {
    "data_generation.generate": "after",
    "knowledge_transfer.recommend": "before",
    "gguf_creation.create_gguf": "after",
    "quality_assurance.validate_model": "after",
    "gguf_creation.deploy": "after",
    "cost_monitor.record_usage": "after",
}
MAX_STEPS = 8
SLOW_RESTART_S = 30.0
HUNG_TIMEOUT_S = 30.0


async def test_every_agent_sigkilled_mid_step_and_the_job_completes_with_each_side_effect_once(
    chaos_env: dict[str, str], chaos_client: SwarmClient, tmp_path: Path, tiny_gguf: Path
) -> None:
    data_dir = Path(chaos_env["MEETARA_DATA_DIR"])
    with ProcessSwarm(chaos_env, tmp_path / "swarm") as swarm:
        for label, point in HOLDS.items():
            swarm.hold(point, label)
        training = {"max_steps": MAX_STEPS, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2}
        spec = {"target": "general_health", "base_model": str(tiny_gguf), "samples": 40, "training": training}
        submitted = await chaos_client.call_model("conductor", "submit_job", spec, SubmitJobOutput)
        job_id = submitted.job_id

        killed: list[str] = []
        # Every agent restarts once (QA loads MiniLM and fits its crisis detector again), the CPU is hogged.
        with anyio.fail_after(900):
            for tick in itertools.count():
                if tick % 10 == 0 and (await job_state(chaos_client, job_id)).state in {"done", "failed"}:
                    break
                for label in swarm.held():
                    agent = label.split(".")[0]
                    swarm.release_hold(label)
                    if label == "data_generation.generate":
                        # The Conductor dies too, with the data call in flight, and Data Generation
                        # comes back slowly (a busy host, an image pull): the Conductor's successor
                        # adopts the job, finds no live Data Generation and waits for it.
                        swarm.kill("conductor")
                        swarm.restart(agent, start_delay_s=SLOW_RESTART_S)
                        while await chaos_client.agents(agent):  # until its presence has expired
                            await anyio.sleep(0.1)
                        swarm.start("conductor")
                        # Its own presence, not the killed one's that has not yet expired.
                        await anyio.to_thread.run_sync(swarm.wait_ready, "conductor")
                        killed += ["conductor", agent]
                        continue
                    swarm.restart(agent)
                    killed.append(agent)
                if "gpu_optimization" not in killed and any(s >= 2 for s in checkpoint_steps(data_dir)):
                    swarm.restart("gpu_optimization")
                    killed.append("gpu_optimization")
                await anyio.sleep(0.05)
        job = await job_state(chaos_client, job_id)
        ledger = await chaos_client.call_model(
            "cost_monitor", "cost_report", {"period": "all", "by": "step"}, CostReportOutput
        )
        logs = {name: swarm.log_tail(name) for name in swarm.agents}
        conductor_log = log_events(swarm.log_text("conductor"))
        started = {label: Counter(swarm.calls(label, "started")) for label in [*HOLDS, "gpu_optimization.train"]}
        finished = {label: Counter(swarm.calls(label)) for label in [*HOLDS, "gpu_optimization.train"]}

    assert job.state == "done", f"{job.error}\n{logs}"
    assert sorted(killed) == sorted([*swarm.agents, "gguf_creation"])  # gguf_creation twice: build and deploy
    # Each killed call really was cut short and delivered again (the same idempotency key twice).
    assert all(sorted(keys.values())[-1] == 2 for keys in started.values()), started
    assert max(finished["gpu_optimization.train"].values()) == 1
    assert max(finished["knowledge_transfer.recommend"].values()) == 1

    # The adopting Conductor found Data Generation still away and waited for it, spending no attempt.
    waits = [e for e in conductor_log if e.get("event") == "waiting for an agent"]
    assert ("data", "data_generation") in [(e["step"], e["agent"]) for e in waits], waits
    # Each step ran as one attempt, training resumed from its checkpoint, not from step 0.
    assert all(
        job.step(s).attempts == 1 for s in ("data", "knowledge_transfer", "train", "convert", "model_qa", "deploy")
    )
    train = job.step("train").output
    assert train["resumed_from_step"] >= 2 and train["metrics"]["steps"] == MAX_STEPS

    # One of each side effect: dataset, training run, deployed version, ledger entry per step.
    datasets = sorted(p.name for p in (data_dir / "training").rglob("*.jsonl"))
    assert datasets == ["general_health_eval_data.jsonl", "general_health_training_data.jsonl"]
    assert len(list(data_dir.rglob("training_metrics.json"))) == 1
    manifest = json.loads((Path(chaos_env["MEETARA_MODELS_DIR"]) / "manifest.json").read_text())
    assert [(m["model_id"], m["version"]) for m in manifest["models"]] == [("meetara_general_health", "v1")]
    per_step = {row.key: row.entries for row in ledger.rows}
    assert per_step == dict.fromkeys(["data", "knowledge_transfer", "train", "convert", "model_qa", "deploy"], 1)


async def test_a_hung_call_times_out_and_is_retried_then_a_cancel_stops_the_job_mid_training(
    chaos_env: dict[str, str], chaos_client: SwarmClient, tmp_path: Path, tiny_gguf: Path
) -> None:
    """The agent stays alive (heartbeats go on) but one call never returns: only the step timeout helps.

    Then the job is cancelled while it trains: training stops, nothing after it runs.
    """
    # The hung call is a quick one (a warm-start lookup): its retry finishes well inside the step
    # timeout even on a machine too busy to generate data in that time.
    catalog = tiny_catalog(tmp_path / "hang", step_timeouts={"knowledge_transfer": HUNG_TIMEOUT_S})
    env = {**chaos_env, "MEETARA_CATALOG_DIR": str(catalog)}
    with ProcessSwarm(env, tmp_path / "swarm") as swarm:
        swarm.hold("before", "knowledge_transfer.recommend", once=True)
        training = {"max_steps": 400, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2}
        spec = {"target": "sleep", "base_model": str(tiny_gguf), "samples": 40, "training": training}
        submitted = await chaos_client.call_model("conductor", "submit_job", spec, SubmitJobOutput)
        training_job = await wait_for_state(chaos_client, submitted.job_id, {"train", "done", "failed"})
        with anyio.fail_after(600):
            while not checkpoint_steps(Path(env["MEETARA_DATA_DIR"])):
                await anyio.sleep(0.1)
        await chaos_client.call("conductor", "cancel_job", {"job_id": submitted.job_id})
        job = await wait_for_state(chaos_client, submitted.job_id, {"cancelled", "done", "failed"}, timeout=300)
        with pytest.raises(InvalidParams, match="is cancelled"):
            await chaos_client.call("conductor", "resume_job", {"job_id": submitted.job_id})
        hung = swarm.held()
        log = swarm.log_text("conductor")
    assert training_job.state == "train", training_job.error
    assert hung == ["knowledge_transfer.recommend"]  # the first call is still stuck in there
    assert training_job.step("knowledge_transfer").attempts == 2 and training_job.step("data").attempts == 1
    retried = [e for e in log_events(log) if e["event"] == "step failed; retrying"]
    assert len(retried) == 1 and retried[0]["step"] == "knowledge_transfer", retried
    assert f"within {HUNG_TIMEOUT_S:g}s" in retried[0]["error"], retried

    assert job.state == "cancelled" and job.step("train").status == "failed"
    assert job.step("convert").attempts == 0
