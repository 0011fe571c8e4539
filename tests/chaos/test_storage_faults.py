"""Storage faults: a corrupt base model, and a disk that refuses the GGUF write or the deploy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from protocol import InvalidParams
from protocol.agents.conductor import SubmitJobOutput
from runtime import SwarmClient
from runtime.testing import ProcessSwarm
from tests.chaos.conftest import wait_for_state

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(900)]

FILE_SIZE_LIMIT = 512 * 1024
"""Above the tiny model's LoRA adapter GGUF, below its merged model: the merged write fails."""


def tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def partial_files(*folders: Path) -> list[str]:
    return [str(p) for folder in folders for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


async def submit(client: SwarmClient, spec: dict[str, Any]) -> str:
    return (await client.call_model("conductor", "submit_job", spec, SubmitJobOutput)).job_id


async def test_corrupt_base_and_full_disk_fail_jobs_clearly_and_production_stays_untouched(
    chaos_env: dict[str, str], chaos_client: SwarmClient, tmp_path: Path, tiny_gguf: Path
) -> None:
    models, data = Path(chaos_env["MEETARA_MODELS_DIR"]), Path(chaos_env["MEETARA_DATA_DIR"])
    training = {"max_steps": 8, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 4}
    spec = {"target": "general_health", "base_model": str(tiny_gguf), "samples": 40, "training": training}
    client = chaos_client
    with ProcessSwarm(chaos_env, tmp_path / "swarm") as swarm:
        first = await wait_for_state(client, await submit(client, spec), {"done", "failed"})
        assert first.state == "done", first.error
        production = tree(models)

        # A base model cut in half: refused when submitted (GPU Optimization reads its header),
        # naming the file; nothing is queued and the swarm carries on.
        corrupt = tmp_path / "half-a-model.gguf"
        corrupt.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
        with pytest.raises(InvalidParams, match="base model refused") as refused:
            await submit(client, {**spec, "base_model": str(corrupt)})
        assert str(corrupt) in refused.value.message
        # One that breaks after the job was accepted (its data step held meanwhile; a held call
        # hangs, so Data Generation is restarted and the call delivered again) fails the training
        # step once, naming the file: a corrupt file is not retried.
        breaks_later = tmp_path / "breaks-later.gguf"
        breaks_later.write_bytes(tiny_gguf.read_bytes())
        swarm.hold("before", "data_generation.generate")
        later_id = await submit(client, {**spec, "base_model": str(breaks_later)})
        with anyio.fail_after(300):
            while "data_generation.generate" not in swarm.held():
                await anyio.sleep(0.1)
        breaks_later.write_bytes(corrupt.read_bytes())
        swarm.release_hold("data_generation.generate")
        swarm.restart("data_generation")
        broken = await wait_for_state(client, later_id, {"done", "failed"})
        assert broken.state == "failed" and str(breaks_later) in (broken.error or ""), broken.error
        assert broken.step("train").attempts == 1

        # The disk refuses the merged GGUF: the job fails at convert with the reason, no partial file.
        swarm.restart("gguf_creation", file_size_limit=FILE_SIZE_LIMIT)
        # Other data, so a model that differs from v1; the tiny model's replies are noise, so the
        # regression gate (tested in tests/models/test_deploy.py) must not stand before the disk.
        second_id = await submit(client, {**spec, "seed": 1, "allow_regression": True})
        second = await wait_for_state(client, second_id, {"done", "failed"})
        assert second.state == "failed" and "File too large" in (second.error or ""), second.error
        assert "storage refused a write" in (second.error or "") and second.step("convert").attempts == 1
        assert tree(models) == production and partial_files(models, data) == []

        # Room again for the build, but the disk fills during the deploy: production stays as it was.
        swarm.hold("before", "gguf_creation.deploy")
        swarm.restart("gguf_creation")
        await client.call("conductor", "resume_job", {"job_id": second_id})
        with anyio.fail_after(300):
            while "gguf_creation.deploy" not in swarm.held():
                await anyio.sleep(0.1)
        swarm.release_hold("gguf_creation.deploy")
        swarm.restart("gguf_creation", file_size_limit=FILE_SIZE_LIMIT)
        second = await wait_for_state(client, second_id, {"done", "failed"})
        assert second.state == "failed" and second.step("deploy").status == "failed", second.error
        assert "File too large" in (second.error or "") and str(models) in (second.error or "")
        assert tree(models) == production and partial_files(models, data) == []

        # Once the disk has room the same job deploys v2 and retires v1 to legacy.
        swarm.restart("gguf_creation")
        await client.call("conductor", "resume_job", {"job_id": second_id})
        second = await wait_for_state(client, second_id, {"done", "failed"})
        assert second.state == "done", second.error
    manifest = json.loads((models / "manifest.json").read_text())
    lanes = {m["version"]: m["lane"] for m in manifest["models"]}
    assert lanes == {"v1": "legacy", "v2": "production"}
    # The layout folder users run from now shows v2.
    v2 = next(m for m in manifest["models"] if m["version"] == "v2")
    for f in v2["files"]:
        layout_file = models / "D_domain_specific" / "healthcare" / Path(f["path"]).name
        assert layout_file.stat().st_ino == (models / f["path"]).stat().st_ino
