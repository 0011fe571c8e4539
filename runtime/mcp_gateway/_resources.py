"""MCP resources: job reports and the deployed-models manifest, read through the agents' tools.

Read through the bus rather than from disk so a gateway on another machine than the agents
sees the same reports and manifest.
"""

from __future__ import annotations

import json
import re

import mcp_types as types
import structlog
from mcp.shared.exceptions import MCPError

from protocol import MeetaraError, RpcError
from protocol.agents.conductor import ListJobsOutput
from runtime._client import SwarmClient

__all__ = ["MANIFEST_URI", "REPORT_TEMPLATE", "list_resources", "read_resource", "resource_templates"]

log = structlog.get_logger("runtime.mcp_gateway")

MANIFEST_URI = "meetara://models/manifest"
"""Every deployed model version (``gguf_creation.list_models``)."""
REPORT_TEMPLATE = "meetara://jobs/{job_id}/report"
"""One job's report (``conductor.job_report``)."""
_REPORT_URI = re.compile(r"^meetara://jobs/([0-9a-f]{8,64})/report$")
RESOURCE_NOT_FOUND = -32002
"""MCP's error code for a resource URI the server does not know."""
LISTED_JOBS = 50
"""Newest jobs whose reports ``resources/list`` names (any job is readable through the template)."""

_JSON = "application/json"


def resource_templates() -> list[types.ResourceTemplate]:
    return [
        types.ResourceTemplate(
            name="job_report",
            title="Job report",
            uri_template=REPORT_TEMPLATE,
            description="What a job produced and what it took: models, files, QA, perplexity, time and cost per stage.",
            mime_type=_JSON,
        )
    ]


async def list_resources(client: SwarmClient, *, timeout: float) -> list[types.Resource]:
    """The manifest, and the reports of the newest jobs (left out while the Conductor is down)."""
    resources = [
        types.Resource(
            name="models_manifest",
            title="Deployed models",
            uri=MANIFEST_URI,
            description="Every deployed model version with its lane, files, sha256 and QA score.",
            mime_type=_JSON,
        )
    ]
    try:
        arguments = {"limit": LISTED_JOBS}
        jobs = await client.call_model("conductor", "list_jobs", arguments, ListJobsOutput, timeout=timeout)
    except MeetaraError as exc:
        log.warning("job reports left out of the resource list", error=str(exc))
        return resources
    for job in jobs.jobs:
        resources.append(
            types.Resource(
                name=f"job_{job.job_id}_report",
                title=f"Job {job.job_id[:8]} report ({job.scope} {job.target}, {job.state})",
                uri=REPORT_TEMPLATE.format(job_id=job.job_id),
                description=f"Report of the {job.scope} job for {job.target}; state {job.state}.",
                mime_type=_JSON,
            )
        )
    return resources


async def read_resource(client: SwarmClient, uri: str, *, timeout: float) -> types.ReadResourceResult:
    """The resource's JSON; an unknown URI or an agent that cannot answer is an MCP error."""
    if uri == MANIFEST_URI:
        agent, tool, arguments = "gguf_creation", "list_models", {}
    elif match := _REPORT_URI.match(uri):
        agent, tool, arguments = "conductor", "job_report", {"job_id": match.group(1)}
    else:
        raise MCPError(RESOURCE_NOT_FOUND, f"unknown resource {uri!r}: expected {MANIFEST_URI} or {REPORT_TEMPLATE}")
    try:
        result = await client.call(agent, tool, arguments, timeout=timeout)
    except RpcError as exc:
        raise MCPError(exc.code, f"cannot read {uri}: {agent}.{tool}: {exc.message}") from None
    if result.is_error:
        text = " ".join(c.text for c in result.content)
        raise MCPError(RESOURCE_NOT_FOUND, f"cannot read {uri}: {text}")
    text = json.dumps(result.structured_content, indent=2)
    return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type=_JSON, text=text)])
