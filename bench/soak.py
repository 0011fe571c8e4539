"""Soak: concurrent small jobs on a swarm of agent processes while agents are killed at random.

    python -m bench.soak [--jobs 6] [--kill-every 8] [--seed 0] [--cpu-hog N]

Every agent runs as its own process over a private redis-server (tiny model, one domain per job).
While the jobs run, a random agent is SIGKILLed every ``--kill-every`` seconds (±50%) and
restarted under the same instance id, as ``meetara up`` restarts a dead child; ``--cpu-hog N``
keeps N more processes spinning meanwhile (a busy host). At the end it
reports jobs completed / submitted, job time p50/p99, the kills, and the duplicate side effects it
found in what the swarm left behind (must be 0):

- deploys: more than one deployed version of a job's model;
- ledger: more Cost Monitor entries for a job than steps that finished;
- training: more than one training run folder per domain;
- datasets: more than one training split per domain.

It also counts the tool calls a kill cut short (their work then ran again from the start or a
checkpoint) and those that ran twice because a kill took their reply (the work is redone and its
result replaces the first: no second copy is left behind).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from protocol.agents.conductor import JobRecord, SubmitJobOutput
from protocol.agents.cost_monitor import CostReportOutput
from runtime import Settings, SwarmClient, connect

DOMAINS = ["general_health", "sleep", "nutrition", "fitness", "mental_health", "stress_management",
           "women_health", "senior_health", "preventive_care", "chronic_conditions"]  # fmt: skip
"""Healthcare domains: the tiny catalogue lowers their pass mark to what a random 2-layer model can do."""
TERMINAL = {"done", "failed", "cancelled", "paused_budget"}
WORK_TOOLS = [
    ("data_generation", "generate"),
    ("knowledge_transfer", "recommend"),
    ("gpu_optimization", "train"),
    ("gguf_creation", "create_gguf"),
    ("quality_assurance", "validate_model"),
    ("cost_monitor", "record_usage"),
]
"""The tools a job's steps call that take a call context (their calls carry an idempotency key)."""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _soak(work: Path, jobs: int, kill_every: float, seed: int) -> dict[str, Any]:
    from agents.testing import build_tiny_gguf, tiny_catalog
    from runtime.testing import AGENTS, ProcessSwarm, RedisServer, fast_options

    rng = random.Random(seed)
    server = RedisServer(work / "redis", aof=True)
    namespace = f"soak-{seed}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")},
        "MEETARA_BUS_URL": server.url,
        "MEETARA_BUS__NAMESPACE": namespace,
        "MEETARA_BUS__RECLAIM_IDLE_MS": "2000",
        "MEETARA_BUS__HEARTBEAT_MS": "250",
        "MEETARA_LIVENESS_TTL_S": "5",
        "MEETARA_SHUTDOWN_GRACE_S": "3",
        "MEETARA_REQUEST_TIMEOUT_S": "300",
        "MEETARA_ARTIFACT_URL": str(work / "artifacts"),
        "MEETARA_DATA_DIR": str(work / "data"),
        "MEETARA_MODELS_DIR": str(work / "models"),
        "MEETARA_MODEL_CACHE_DIR": str(work / "model-cache"),
        "MEETARA_CATALOG_DIR": str(tiny_catalog(work / "catalog")),
        "MEETARA_LOG_FORMAT": "json",
    }
    settings = Settings.load(
        bus_url=server.url,
        bus=fast_options(namespace, reclaim_idle_ms=2000, heartbeat_ms=250),
        artifact_url=env["MEETARA_ARTIFACT_URL"],
    )
    base = build_tiny_gguf(work / "tiny.gguf")
    training = {"max_steps": 8, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2}
    kills: Counter[str] = Counter()
    try:
        with ProcessSwarm(env, work / "swarm") as swarm:
            async with connect(settings, sender="soak") as bus:
                client = SwarmClient(bus, timeout=60)
                ids = []
                for i in range(jobs):
                    spec = {"target": DOMAINS[i % len(DOMAINS)], "base_model": str(base), "samples": 40,
                            "training": training}  # fmt: skip
                    ids.append((await client.call_model("conductor", "submit_job", spec, SubmitJobOutput)).job_id)
                started = time.monotonic()
                next_kill = started + kill_every * rng.uniform(0.5, 1.5)
                with anyio.fail_after(3600):
                    while True:
                        states = [await _state(client, job_id) for job_id in ids]
                        if all(s in TERMINAL for s in states):
                            break
                        if time.monotonic() >= next_kill:
                            victim = rng.choice(AGENTS)
                            swarm.restart(victim)
                            kills[victim] += 1
                            next_kill = time.monotonic() + kill_every * rng.uniform(0.5, 1.5)
                        await anyio.sleep(0.5)
                records = [await client.call_model("conductor", "job_status", {"job_id": j}, JobRecord) for j in ids]
                ledger = await client.call_model(
                    "cost_monitor", "cost_report", {"period": "all", "by": "job"}, CostReportOutput
                )
            labels = [f"{agent}.{tool}" for agent, tool in WORK_TOOLS]
            started_keys = Counter(k for label in labels for k in swarm.calls(label, "started") if k != "None")
            done_keys = Counter(k for label in labels for k in swarm.calls(label) if k != "None")
            # Work redone because a kill took its reply, and work a kill cut short (then run again).
            rerun = sum(n - 1 for n in done_keys.values() if n > 1)
            interrupted = sum(max(0, n - done_keys[k]) for k, n in started_keys.items())
    finally:
        server.stop()
    return _report(work, records, ledger, kills, rerun, interrupted)


async def _state(client: SwarmClient, job_id: str) -> str:
    try:
        job = await client.call_model("conductor", "job_status", {"job_id": job_id}, JobRecord, timeout=10)
    except Exception:  # the Conductor was just killed: ask again next round
        return "unknown"
    return job.state


def _report(
    work: Path, records: list[JobRecord], ledger: CostReportOutput, kills: Counter[str], rerun: int, interrupted: int
) -> dict[str, Any]:
    done = [r for r in records if r.state == "done"]
    times = [(r.finished_at or r.updated_at) - r.created_at for r in done]
    manifest = json.loads((work / "models" / "manifest.json").read_text()) if done else {"models": []}
    versions = Counter(m["model_id"] for m in manifest["models"])
    entries = {row.key: row.entries for row in ledger.rows}
    finished_steps = {
        r.job_id: sum(1 for s in r.steps if s.status == "done" and s.agent not in (None, "conductor")) for r in records
    }
    runs = Counter(p.parent.name for p in (work / "data").rglob("training_metrics.json"))
    splits = Counter(p.name for p in (work / "data" / "training").rglob("*_training_data.jsonl"))
    duplicates = {
        "deploys": sum(n - 1 for n in versions.values()),
        "ledger": sum(max(0, entries.get(job, 0) - n) for job, n in finished_steps.items()),
        "training_runs": sum(n - 1 for n in runs.values()),
        "datasets": sum(n - 1 for n in splits.values()),
    }
    missing = {"ledger": sum(max(0, n - entries.get(job, 0)) for job, n in finished_steps.items())}
    return {
        "submitted": len(records),
        "completed": len(done),
        "states": dict(Counter(r.state for r in records)),
        "errors": {r.spec.target: r.error for r in records if r.state != "done"},
        "job_seconds_p50": round(statistics.median(times), 1) if times else None,
        "job_seconds_p99": round(_percentile(times, 0.99), 1) if times else None,
        "kills": dict(kills),
        "duplicate_side_effects": duplicates,
        "missing_side_effects": missing,
        "calls_cut_short_by_kills": interrupted,
        "re_executions_after_kills": rerun,
        "step_attempts_over_one": sum(max(0, s.attempts - 1) for r in records for s in r.steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--jobs", type=int, default=6, choices=range(1, len(DOMAINS) + 1), help="concurrent jobs, one domain each"
    )
    parser.add_argument("--kill-every", type=float, default=8.0, help="mean seconds between random kills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-hog", type=int, default=0, metavar="N", help="busy-loop processes beside the swarm")
    args = parser.parse_args()
    from runtime.testing import CpuHog

    with tempfile.TemporaryDirectory(prefix="meetara-bench-soak-") as tmp, CpuHog(args.cpu_hog):
        started = time.perf_counter()
        report = anyio.run(_soak, Path(tmp), args.jobs, args.kill_every, args.seed)
        report["wall_seconds"] = round(time.perf_counter() - started)
        report["cpu_hog_processes"] = args.cpu_hog
    print(json.dumps(report, indent=2))
    duplicates = sum(report["duplicate_side_effects"].values())
    raise SystemExit(0 if report["completed"] == report["submitted"] and duplicates == 0 else 1)


if __name__ == "__main__":
    main()
