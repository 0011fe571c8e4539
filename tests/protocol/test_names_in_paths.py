"""Names that end up in file paths or keys cannot escape their folders: every such field refuses
``../``, absolute paths, NUL bytes and oversize values before a tool runs."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from protocol.agents.gguf_creation import ModelMetadata
from runtime import agent_names, load_agent_class

# Fields whose values name things: domains, categories, jobs, models, versions, steps…
NAME_FIELDS = {
    "agent", "category", "domain", "generator", "gpu", "job_id", "lane", "model_id", "name", "provider",
    "scope", "state", "step", "target", "tier", "version", "warm_started_from",
}  # fmt: skip
DESCRIPTIVE = {"ArtifactRef.name", "DeviceProfile.name"}
"""Free text for humans (an uploaded file's original name, the GPU's marketing name): never a path."""
EVIL = ["../../etc/passwd", "/etc/passwd", "legal\x00.gguf", "a/b", "..", "x" * 300]


def _models(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def name_fields(model: type[BaseModel], seen: set[type] | None = None) -> Iterator[tuple[str, object]]:
    """(qualified field name, annotation with its constraints) of every name field, nested models too."""
    seen = seen if seen is not None else set()
    if model in seen:
        return
    seen.add(model)
    for field, info in model.model_fields.items():
        if field in NAME_FIELDS:
            constrained = typing.Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            yield f"{model.__name__}.{field}", constrained
        for nested in _models(info.annotation):
            yield from name_fields(nested, seen)


def all_inputs() -> list[type[BaseModel]]:
    models = {t.input_model for name in agent_names() for t in load_agent_class(name).tools}
    return sorted(models | {ModelMetadata}, key=lambda m: m.__name__)  # metadata comes back from artifacts


def _strings(annotation: object) -> bool:
    """Whether the field takes free strings (a ``Literal`` of fixed names does not)."""
    args = typing.get_args(annotation)
    return annotation is str or any(_strings(a) for a in args if a is not types.NoneType)


FIELDS = sorted(
    {f for model in all_inputs() for f in name_fields(model) if f[0] not in DESCRIPTIVE and _strings(f[1])},
    key=lambda f: f[0],
)


@pytest.mark.parametrize(("field", "annotation"), FIELDS, ids=[f for f, _ in FIELDS])
def test_a_name_field_refuses_path_tricks(field: str, annotation: object) -> None:
    adapter = TypeAdapter(annotation)
    accepted = []
    for value in EVIL:
        try:
            adapter.validate_python(value)
        except ValidationError:
            continue
        accepted.append(value)
    assert accepted == [], f"{field} accepts {accepted}"
