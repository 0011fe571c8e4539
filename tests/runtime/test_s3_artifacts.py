"""Artifacts on an S3-compatible bucket: the real s3fs client against moto's S3 server, started here.

Agents on different hosts share nothing but the broker and the bucket: each keeps its own data
folder (its local cache), and every artifact crosses by reference, verified on arrival.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from agents.testing import tiny_job_env
from protocol.agents.conductor import SubmitJobOutput
from runtime import ArtifactCorrupt, ArtifactStore, SwarmClient, connect
from runtime.testing import AGENTS, ProcessSwarm, free_port
from tests.chaos.conftest import settings_of, wait_for_state

BUCKET = "meetara-artifacts"
SECRET = f"secret-{uuid.uuid4().hex}"
"""The bucket's secret key: it must never reach a log, a reference or a file the swarm writes."""


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """Credentials and endpoint of a private S3 server, as a rented host gets them: by environment."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "meetara-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SECRET,
        region_name=env["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture
def s3(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh prefix of the bucket, with this process's environment pointing at the server."""
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


@pytest.mark.anyio
async def test_a_reader_with_nothing_on_its_disk_fetches_what_a_writer_stored(s3: str, tmp_path: Path) -> None:
    source = tmp_path / "writer" / "weights.bin"
    source.parent.mkdir()
    source.write_bytes(b"\x00\x01" * 300_000)
    ref = await ArtifactStore(f"{s3}/artifacts").put_file(source, media_type="application/octet-stream")
    assert ref.uri.startswith(f"s3://{BUCKET}/") and ref.size == 600_000

    reader = ArtifactStore(f"{s3}/artifacts")  # its disk holds nothing: only the bucket has the bytes
    fetched = await reader.fetch(ref, tmp_path / "reader" / "weights.bin")
    assert fetched.read_bytes() == source.read_bytes()
    assert await reader.exists(ref)
    assert await reader.read_bytes(ref) == source.read_bytes()


@pytest.mark.anyio
async def test_an_object_changed_in_the_bucket_is_refused_and_leaves_no_file(
    s3: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "report.json"
    source.write_text(json.dumps({"score": 0.91}))
    ref = await ArtifactStore(f"{s3}/artifacts").put_file(source)
    bucket, key = ref.uri.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps({"score": 0.19}).encode())  # same size

    dest = tmp_path / "host-b" / "report.json"
    with pytest.raises(ArtifactCorrupt, match="corrupt"):
        await ArtifactStore(f"{s3}/artifacts").fetch(ref, dest)
    assert not dest.exists()


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_agents_on_separate_hosts_complete_a_job_through_the_bucket(
    child_env: dict[str, str], s3: str, s3_env: dict[str, str], tmp_path: Path, tiny_gguf: Path, model_cache: Path
) -> None:
    """Each agent process has its own data and models folders; the bucket is all they share."""
    env = {**tiny_job_env(child_env, tmp_path / "job", model_cache), **s3_env, "MEETARA_ARTIFACT_URL": f"{s3}/store"}
    hosts = tmp_path / "hosts"
    agent_env = {
        name: {"MEETARA_DATA_DIR": str(hosts / name / "data"), "MEETARA_MODELS_DIR": str(hosts / name / "models")}
        for name in AGENTS
    }
    async with connect(settings_of(env), sender="s3-test") as bus:
        client = SwarmClient(bus, timeout=30.0)
        with ProcessSwarm(env, tmp_path / "swarm", agent_env=agent_env) as swarm:
            spec = {"target": "general_health", "base_model": str(tiny_gguf), "samples": 20}
            spec["training"] = {"max_steps": 4, "effective_batch": 4}
            job_id = (await client.call_model("conductor", "submit_job", spec, SubmitJobOutput)).job_id
            job = await wait_for_state(client, job_id, {"done", "failed"})
            logs = {name: swarm.log_text(name) for name in AGENTS}

    assert job.state == "done", f"{job.error}\n{logs['conductor'][-3000:]}"
    manifest = json.loads((hosts / "gguf_creation" / "models" / "manifest.json").read_text())
    assert [m["model_id"] for m in manifest["models"]] == ["meetara_general_health"]
    # The training data crossed from the data host to the GPU host through the bucket, not a shared disk.
    assert list((hosts / "data_generation" / "data").rglob("*.jsonl"))
    assert not (tmp_path / "job" / "data").exists()
    for name, text in logs.items():
        assert SECRET not in text, f"{name} logged the bucket's secret key"
