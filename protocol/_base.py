"""The strict base model and the constrained string types every wire model uses."""

from __future__ import annotations

import os
import time
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["Name", "StreamName", "ToolModel", "WireModel", "new_id", "now"]


class WireModel(BaseModel):
    """Base of every wire model: camelCase on the wire (as MCP), unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""An agent or tool name: lower snake case, safe inside stream keys and file paths."""

StreamName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")]
"""A logical stream name (without the deployment namespace)."""


def new_id() -> str:
    """A fresh random identifier (32 hex digits, 128 random bits)."""
    return os.urandom(16).hex()


def now() -> float:
    """Wall-clock time in seconds since the epoch: deadlines cross machines, so not monotonic."""
    return time.time()


class ToolModel(BaseModel):
    """Base of every tool input and output model: snake_case, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid")
