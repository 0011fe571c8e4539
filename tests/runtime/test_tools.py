"""Tool declaration: schemas from models, honest annotations, and registration errors."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, Field

from protocol import ToolModel
from runtime import Agent, CallContext, tool


class In(ToolModel):
    domain: str = Field(description="Domain name")
    count: int = 10


class Out(ToolModel):
    written: int


class Sample(Agent):
    name = "sample"

    @tool(read_only=True)
    async def look(self, params: In) -> Out:
        """Look at something."""
        return Out(written=0)

    @tool(destructive=True, idempotent=True)
    async def wipe(self, params: In, ctx: CallContext) -> Out:
        """Wipe something.

        Longer explanation.
        """
        return Out(written=params.count)


def test_specs_come_from_the_models_and_docstrings() -> None:
    specs = {s.name: s for s in Sample.tools.specs()}
    assert set(specs) == {"look", "wipe"}
    look = specs["look"]
    assert look.description == "Look at something."
    assert look.input_schema["properties"]["domain"]["description"] == "Domain name"
    assert look.input_schema["required"] == ["domain"]
    assert look.input_schema["additionalProperties"] is False
    assert look.output_schema is not None and look.output_schema["required"] == ["written"]
    assert look.annotations is not None
    assert look.annotations.read_only_hint is True and look.annotations.destructive_hint is False
    wipe = specs["wipe"]
    assert wipe.annotations is not None
    assert wipe.annotations.destructive_hint is True and wipe.annotations.read_only_hint is False
    assert Sample.tools.get("wipe") is not None and Sample.tools.get("wipe").wants_context  # type: ignore[union-attr]


def test_duplicate_tool_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate tool name 'same'"):

        class Dup(Agent):
            name = "dup"

            @tool(name="same")
            async def a(self, params: In) -> Out:
                """A."""
                return Out(written=1)

            @tool(name="same")
            async def b(self, params: In) -> Out:
                """B."""
                return Out(written=2)


class Loose(BaseModel):
    x: int = 0


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("async def t(self, params: Loose) -> Out:\n    'Doc.'", "must forbid unknown fields"),
        ("async def t(self, params: In) -> dict:\n    'Doc.'", "must be annotated with a pydantic model"),
        ("async def t(self, params: In) -> Out:\n    pass", "needs a docstring"),
        ("async def t(self, params: In, other: int) -> Out:\n    'Doc.'", "annotated as CallContext"),
        ("async def t(self) -> Out:\n    'Doc.'", "takes (self, params[, ctx])"),
        ("def t(self, params: In) -> Out:\n    'Doc.'", "must be an async def"),
    ],
)
def test_bad_tool_declarations_fail_at_class_creation(source: str, error: str) -> None:
    namespace: dict[str, object] = {"Loose": Loose, "In": In, "Out": Out, "CallContext": CallContext}
    exec(source, namespace)
    with pytest.raises(TypeError, match=re.escape(error)):

        class Bad(Agent):
            name = "bad"
            t = tool(namespace["t"])  # type: ignore[arg-type]


def test_agent_names_must_be_snake_case() -> None:
    with pytest.raises(TypeError, match="lower snake case"):

        class Upper(Agent):
            name = "Upper-Case"
