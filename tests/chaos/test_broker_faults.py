"""The broker goes away: restarted in the middle of a job, or not there yet when agents start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from protocol import RpcError
from protocol.agents.conductor import JobRecord, SubmitJobOutput
from runtime import SwarmClient, connect
from runtime.testing import ProcessSwarm, RedisSentinels, RedisServer, free_port, log_events, make_tls
from tests.chaos.conftest import checkpoint_steps, settings_of

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(900)]


async def _poll_state(client: SwarmClient, job_id: str) -> str | None:
    """The job's state, or None while the broker is away."""
    try:
        job = await client.call_model("conductor", "job_status", {"job_id": job_id}, JobRecord, timeout=5)
    except RpcError:
        return None
    return job.state


@dataclass
class BrokerOutcome:
    """A job done despite the fault: its record, each agent's log, and how often each was restarted."""

    job: JobRecord
    logs: dict[str, str]
    restarts: dict[str, int]


async def _job_through_a_broker_fault(
    env: dict[str, str], tmp_path: Path, tiny_gguf: Path, fault: Callable[[], Awaitable[None]]
) -> BrokerOutcome:
    """A job on a swarm of processes, with ``fault`` done to the broker once training has checkpointed."""
    with ProcessSwarm(env, tmp_path / "swarm") as swarm:
        async with connect(settings_of(env), sender="chaos-test") as bus:
            client = SwarmClient(bus, timeout=30.0)
            training = {"max_steps": 10, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2}
            spec = {"target": "general_health", "base_model": str(tiny_gguf), "samples": 40, "training": training}
            job_id = (await client.call_model("conductor", "submit_job", spec, SubmitJobOutput)).job_id
            with anyio.fail_after(600):
                while not any(s >= 2 for s in checkpoint_steps(Path(env["MEETARA_DATA_DIR"]))):
                    await anyio.sleep(0.05)
            await fault()
            with anyio.fail_after(600):
                while (state := await _poll_state(client, job_id)) not in {"done", "failed"}:
                    await anyio.sleep(0.5)
            job = await client.call_model("conductor", "job_status", {"job_id": job_id}, JobRecord)
        logs = {name: swarm.log_text(name) for name in swarm.agents}
        restarts = {name: n - 1 for name, n in swarm.starts.items() if n > 1}
    assert state == "done", f"{job.error}\n{ {name: text[-3000:] for name, text in logs.items()} }"
    return BrokerOutcome(job, logs, restarts)


async def test_redis_over_tls_with_an_acl_user_restarted_mid_training_the_job_completes(
    chaos_env: dict[str, str], tmp_path: Path, tiny_gguf: Path
) -> None:
    # Production-like: TLS, an ACL user instead of the default one, an append-only file.
    tls = make_tls(tmp_path / "tls")
    server = RedisServer(tmp_path / "redis", user=("meetara", "s3cret-pass"), tls=tls, aof=True)

    async def restart() -> None:
        server.stop()  # SIGTERM: Redis writes its append-only file and exits
        await anyio.sleep(3)
        server.start()

    try:
        out = await _job_through_a_broker_fault(
            {**chaos_env, "MEETARA_BUS_URL": server.url}, tmp_path, tiny_gguf, restart
        )
    finally:
        server.stop()
    assert out.restarts == {}  # nobody crashed: every agent rode out the outage
    assert out.job.step("train").attempts == 1 and out.job.step("train").output["metrics"]["steps"] == 10
    # The outage shows in every agent's log, password redacted.
    quiet = [name for name, text in out.logs.items() if '"event": "broker unreachable, retrying"' not in text]
    assert quiet == [], quiet
    assert "s3cret-pass" not in "".join(out.logs.values())


async def test_the_redis_primary_lost_mid_training_behind_sentinel_the_job_completes_once(
    chaos_env: dict[str, str], tmp_path: Path, tiny_gguf: Path
) -> None:
    """A primary, a replica and three Sentinels; the primary is SIGKILLed mid-training and never returns."""
    primary = RedisServer(tmp_path / "primary")
    replica: RedisServer | None = None
    sentinels: RedisSentinels | None = None

    async def lose_the_primary() -> None:
        assert sentinels is not None and sentinels.primary_port() == primary.port  # no failover before
        primary.kill()

    try:
        replica = RedisServer(tmp_path / "replica", replica_of=primary.port)
        replica.wait_replicating()
        sentinels = RedisSentinels(tmp_path, primary.port)
        env = {**chaos_env, "MEETARA_BUS_URL": sentinels.url()}
        out = await _job_through_a_broker_fault(env, tmp_path, tiny_gguf, lose_the_primary)
        promoted = sentinels.primary_port()
    finally:
        for server in (primary, replica):
            if server is not None:
                server.stop()
        if sentinels is not None:
            sentinels.stop()
    assert promoted == replica.port
    assert out.restarts == {}
    assert out.job.step("train").attempts == 1 and out.job.step("train").output["metrics"]["steps"] == 10
    manifest = json.loads((Path(env["MEETARA_MODELS_DIR"]) / "manifest.json").read_text())
    assert [(m["model_id"], m["version"]) for m in manifest["models"]] == [("meetara_general_health", "v1")]


def test_an_agent_started_before_redis_waits_with_a_clear_line_and_joins_once_it_is_up(
    chaos_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**chaos_env, "MEETARA_BUS_URL": f"redis://127.0.0.1:{port}/0"}
    log = tmp_path / "agent.log"
    with open(log, "wb") as sink:
        agent = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "agent", "cost_monitor"], env=env, stdout=sink, stderr=sink
        )
    server: RedisServer | None = None
    try:
        deadline = time.monotonic() + 60
        while "waiting for the broker" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.poll() is None, log.read_text()
        server = RedisServer(tmp_path / "late-redis", port=port)
        while '"agents running"' not in log.read_text() and time.monotonic() < deadline + 30:
            time.sleep(0.1)
    finally:
        agent.terminate()
        agent.wait(30)
        if server is not None:
            server.stop()
    lines = log_events(log.read_text())
    waits = [e for e in lines if e["event"] == "waiting for the broker"]
    assert waits and f"cannot reach Redis at redis://127.0.0.1:{port}/0" in waits[0]["error"]
    assert any(e["event"] == "agents running" for e in lines)
    assert agent.returncode == 0
