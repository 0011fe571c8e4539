"""Tool descriptors and tool-call results, in the shape MCP clients expect."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from protocol._base import Name, WireModel

__all__ = [
    "ArtifactRef",
    "CallToolResult",
    "ListToolsResult",
    "TextContent",
    "ToolAnnotations",
    "ToolSpec",
]


class ToolAnnotations(WireModel):
    """Behaviour hints for clients (MCP ``ToolAnnotations``)."""

    title: str | None = None
    """Human-readable title."""
    read_only_hint: bool | None = None
    """True when the tool changes nothing."""
    destructive_hint: bool | None = None
    """True when the tool may delete or overwrite (meaningful only when not read-only)."""
    idempotent_hint: bool | None = None
    """True when repeating the call with the same arguments has no further effect."""
    open_world_hint: bool | None = None
    """True when the tool reaches outside the swarm (hosted APIs, downloads)."""


class ToolSpec(WireModel):
    """One tool of one agent, as listed by ``tools/list``."""

    name: Name
    """Tool name, unique within its agent."""
    title: str | None = None
    """Human-readable title."""
    description: str
    """What the tool does; taken from the method's docstring."""
    input_schema: dict[str, Any]
    """JSON Schema of the arguments, generated from the tool's pydantic input model."""
    output_schema: dict[str, Any] | None = None
    """JSON Schema of ``structuredContent``, generated from the tool's output model."""
    annotations: ToolAnnotations | None = None
    """Behaviour hints."""


class ListToolsResult(WireModel):
    """Result of ``tools/list``."""

    tools: list[ToolSpec]
    """Every tool the agent serves."""
    next_cursor: str | None = None
    """Pagination cursor; the swarm's tool lists fit in one page, so always absent today."""


class TextContent(WireModel):
    """Unstructured text content of a tool result."""

    type: Literal["text"] = "text"
    """Content kind."""
    text: str
    """The text."""


class CallToolResult(WireModel):
    """Result of ``tools/call``."""

    content: list[TextContent]
    """Human/LLM readable rendering of the result (the JSON of ``structuredContent``)."""
    structured_content: dict[str, Any] | None = None
    """The tool's output model as JSON; validates against the tool's ``outputSchema``."""
    is_error: bool = False
    """True when the tool ran and reported a failure (the text says why)."""


class ArtifactRef(WireModel):
    """A reference to a file in the artifact store; messages carry these, never file bytes."""

    uri: str = Field(min_length=1, max_length=2048)
    """Where the content lives (``file://`` or any fsspec URL)."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the content; readers verify it."""
    size: int = Field(ge=0)
    """Size in bytes."""
    name: str | None = Field(default=None, max_length=255)
    """Original file name, for humans."""
    media_type: str | None = Field(default=None, max_length=255)
    """MIME type, when known."""


MAX_DATASET_BYTES = 2 * 1024**3
"""Largest dataset a tool accepts (2 GiB of JSONL is millions of conversations; the universal
job's 62 domains need a few hundred MB). Bigger is refused before anything is fetched."""


def _dataset_size_fits(ref: ArtifactRef) -> ArtifactRef:
    if ref.size > MAX_DATASET_BYTES:
        raise ValueError(f"dataset is {ref.size:,} bytes; datasets are limited to {MAX_DATASET_BYTES:,} bytes")
    return ref


DatasetRef = Annotated[ArtifactRef, AfterValidator(_dataset_size_fits)]
"""An artifact holding a JSONL dataset, at most ``MAX_DATASET_BYTES``."""
