"""One whole job through the MCP gateway, on the tiny model: submit, follow with progress, status, report."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import mcp_types as types
import pytest

from agents.conductor import ConductorAgent
from agents.cost_monitor import CostMonitorAgent
from agents.data_generation import DataGenerationAgent
from agents.gguf_creation import GgufCreationAgent
from agents.gpu_optimization import GpuOptimizationAgent
from agents.knowledge_transfer import KnowledgeTransferAgent
from agents.quality_assurance import QualityAssuranceAgent
from agents.testing import tiny_catalog
from protocol.agents.conductor import STEPS, JobReport, JobSpec
from runtime.mcp_gateway import MANIFEST_URI, REPORT_TEMPLATE
from tests.mcp.conftest import mcp_session

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(600)]

ALL = [
    ConductorAgent,
    DataGenerationAgent,
    GpuOptimizationAgent,
    GgufCreationAgent,
    QualityAssuranceAgent,
    CostMonitorAgent,
    KnowledgeTransferAgent,
]


async def test_a_client_submits_follows_with_progress_and_reads_the_report_and_manifest(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path, tiny_gguf: Path, model_cache: Path
) -> None:
    catalog = tiny_catalog(tmp_path / "catalog")
    settings = settings_factory(memory_url, catalog_dir=catalog, model_cache_dir=model_cache, request_timeout_s=120.0)
    job = {
        "target": "general_health",
        "base_model": str(tiny_gguf),
        "samples": 20,
        "training": {"max_steps": 4, "effective_batch": 4, "learning_rate": 2e-3, "checkpoint_every": 2},
    }
    async with mcp_session(settings, ALL) as (_, client):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        submit = tools["conductor_submit_job"]
        assert submit.input_schema == JobSpec.model_json_schema()
        assert submit.description and submit.description.startswith("Queue a training job")
        assert tools["conductor_job_report"].output_schema == JobReport.model_json_schema(mode="serialization")
        assert tools["swarm_wait_job"].output_schema == JobReport.model_json_schema(mode="serialization")

        submitted = await client.call_tool("conductor_submit_job", job)
        assert not submitted.is_error, submitted.content
        job_id = submitted.structured_content["job_id"]  # type: ignore[index]

        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        with anyio.fail_after(500):
            followed = await client.call_tool("swarm_wait_job", {"job_id": job_id}, progress_callback=on_progress)
        assert not followed.is_error, followed.content
        report = followed.structured_content
        assert report["job_id"] == job_id and report["state"] == "done", report["error"]  # type: ignore[index]

        values = [p for p, _, _ in seen]
        assert values == sorted(set(values)) and values[-1] == len(STEPS)
        assert all(total == len(STEPS) for _, total, _ in seen)
        assert any(3 < p < 4 for p in values)  # training steps as fractions of the train unit
        assert any("train" in (m or "") for _, _, m in seen)

        status = await client.call_tool("conductor_job_status", {"job_id": job_id})
        record = status.structured_content
        assert record["state"] == "done"  # type: ignore[index]
        assert [s["status"] for s in record["steps"]] == ["done"] * len(STEPS)  # type: ignore[index]
        again = await client.call_tool("conductor_job_report", {"job_id": job_id})
        assert again.structured_content == report

        uri = REPORT_TEMPLATE.format(job_id=job_id)
        assert uri in [r.uri for r in (await client.list_resources()).resources]
        read = (await client.read_resource(uri)).contents[0]
        assert isinstance(read, types.TextResourceContents) and json.loads(read.text) == report
        manifest = (await client.read_resource(MANIFEST_URI)).contents[0]
        assert isinstance(manifest, types.TextResourceContents)
        deployed = json.loads(manifest.text)["models"]
        assert [(m["model_id"], m["job_id"]) for m in deployed] == [("meetara_general_health", job_id)]
