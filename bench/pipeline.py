"""Pipeline benchmark: wall time per stage and orchestration overhead, embedded and on the swarm.

    python -m bench.pipeline [--tiny] [--swarm] [--domain general_health]

Runs one domain job through the Conductor and reads the job record: each step's seconds as the
Conductor measured them (the tool call, bus round trip included) and the job's wall time from
submission to its final state. Orchestration overhead is the wall time spent outside any step
(planning, records, events, the Conductor's own scheduling), as a share of the job's wall time.

--swarm runs the same job a second time with every agent as its own process over a private
redis-server (``meetara up``), in the same run, and prints both overheads side by side.
--tiny uses a generated 2-layer model (seconds per job) instead of the pip-shipped SmolLM2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from protocol.agents.conductor import JobRecord, SubmitJobOutput
from runtime import Settings, SwarmClient, agent_names, connect, load_agent_class, open_swarm


async def _wait(client: SwarmClient, job_id: str) -> JobRecord:
    while True:
        job = await client.call_model("conductor", "job_status", {"job_id": job_id}, JobRecord)
        if job.state in ("done", "failed", "cancelled", "paused_budget"):
            return job
        await anyio.sleep(0.5)


async def _run_job(client: SwarmClient, spec: dict[str, Any]) -> JobRecord:
    submitted = await client.call_model("conductor", "submit_job", spec, SubmitJobOutput, timeout=120)
    return await _wait(client, submitted.job_id)


def _summary(label: str, job: JobRecord) -> float:
    wall = (job.finished_at or job.updated_at) - job.created_at
    inside = sum(s.seconds or 0.0 for s in job.steps)
    stages = "  ".join(f"{s.name} {s.seconds or 0:.1f}s" for s in job.steps)
    overhead = wall - inside
    print(f"{label}: {job.state}  wall {wall:.1f}s  {stages}")
    print(f"{label}: orchestration overhead {overhead:.2f}s = {overhead / wall:.2%} of wall time")
    return overhead / wall


def _settings(root: Path, bus_url: str, catalog: Path | None) -> Settings:
    return Settings(
        bus_url=bus_url,
        artifact_url=str(root / "artifacts"),
        data_dir=root / "data",
        models_dir=root / "models",
        catalog_dir=catalog,
        model_cache_dir=root.parent / "model-cache",
        request_timeout_s=120.0,
    )


async def _embedded(root: Path, spec: dict[str, Any], catalog: Path | None) -> JobRecord:
    settings = _settings(root, f"memory://bench-{uuid.uuid4().hex}", catalog)
    classes = [load_agent_class(n) for n in agent_names()]
    async with open_swarm(settings, classes) as swarm:
        return await _run_job(swarm.client, spec)


async def _swarm(root: Path, spec: dict[str, Any], catalog: Path | None) -> JobRecord:
    from runtime.testing import RedisServer

    server = RedisServer(root / "redis")
    settings = _settings(root, server.url, catalog)
    env = {
        **os.environ,
        "MEETARA_BUS_URL": server.url,
        "MEETARA_ARTIFACT_URL": settings.artifact_url,
        "MEETARA_DATA_DIR": str(settings.data_dir),
        "MEETARA_MODELS_DIR": str(settings.models_dir),
        "MEETARA_MODEL_CACHE_DIR": str(settings.model_cache_dir),
        "MEETARA_REQUEST_TIMEOUT_S": "120",
        "MEETARA_LOG_FORMAT": "json",
        "MEETARA_LOG_LEVEL": "warning",
    }
    if catalog is not None:
        env["MEETARA_CATALOG_DIR"] = str(catalog)
    command = [sys.executable, "-m", "runtime.cli", "up", "--ready-timeout", "300"]
    up = await anyio.open_process(command, env=env, stdout=None, stderr=None)
    try:
        async with connect(settings, sender="bench") as bus:
            client = SwarmClient(bus, timeout=120)
            for _ in range(600):
                if {i.name for i in await client.agents()} == set(agent_names()):
                    break
                await anyio.sleep(0.5)
            return await _run_job(client, spec)
    finally:
        up.send_signal(signal.SIGINT)
        with anyio.move_on_after(60):
            await up.wait()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="general_health")
    parser.add_argument("--tiny", action="store_true", help="a generated 2-layer model instead of SmolLM2")
    parser.add_argument("--swarm", action="store_true", help="also run the job on a swarm of processes over Redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meetara-bench-pipeline-") as tmp:
        work = Path(tmp)
        spec: dict[str, Any] = {"target": args.domain}
        catalog = None
        if args.tiny:
            from agents.testing import build_tiny_gguf, tiny_catalog

            spec["base_model"] = str(build_tiny_gguf(work / "tiny.gguf"))
            spec["samples"] = 40
            spec["training"] = {"max_steps": 6, "effective_batch": 4, "learning_rate": 2e-3}
            catalog = tiny_catalog(work / "catalog")
        started = time.perf_counter()
        embedded = anyio.run(_embedded, work / "embedded", spec, catalog)
        share = _summary("embedded", embedded)
        if args.swarm:
            swarm = anyio.run(_swarm, work / "swarm", spec, catalog)
            swarm_share = _summary("swarm", swarm)
            print(f"swarm / embedded overhead share: {swarm_share / share:.2f}x" if share > 0 else "")
        print(f"benchmark wall {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
