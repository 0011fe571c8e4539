"""The strict base model and the constrained string types every wire model uses."""

from __future__ import annotations

import os
import re
import time
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "CatalogName",
    "Identifier",
    "Label",
    "ModelId",
    "Name",
    "StreamName",
    "ToolModel",
    "WireModel",
    "new_id",
    "now",
]


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


def _catalog_spelling(value: object) -> object:
    # "Mental Health" and "mental-health" mean mental_health; a typo still meets the catalogue's did-you-mean.
    return re.sub(r"[\s-]+", "_", value.strip().lower()) if isinstance(value, str) else value


CatalogName = Annotated[str, BeforeValidator(_catalog_spelling), Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""A domain, category or tier name as the catalogue spells it; it names folders and files."""

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
"""A job id or similar token: letters, digits, ``_`` and ``-`` only, safe inside keys and file paths."""

Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")]
"""A GPU or provider name as printed (``RTX_4090``, ``NVIDIA H200``): no slashes, NULs or leading dots."""

ModelId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,127}$")]
"""A model's id (``meetara_general_health``): it names folders and files of the deployed layout."""

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
