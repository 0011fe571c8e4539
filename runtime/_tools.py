"""Tools declared as typed methods: the ``@tool`` decorator and the per-agent registry."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from protocol import ToolAnnotations, ToolSpec

__all__ = ["ToolDef", "ToolRegistry", "tool"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_MARK = "__meetara_tool__"


@dataclass(frozen=True, slots=True)
class _ToolOptions:
    name: str | None
    title: str | None
    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool


@overload
def tool(fn: F, /) -> F: ...


@overload
def tool(
    *,
    name: str | None = None,
    title: str | None = None,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    title: str | None = None,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
) -> F | Callable[[F], F]:
    """Mark an ``async def method(self, params: In[, ctx: CallContext]) -> Out`` as a tool.

    The description is the method's docstring; input and output JSON Schemas come from the
    annotated pydantic models. The hints are set honestly: they tell LLM clients what is safe.
    """
    options = _ToolOptions(name, title, read_only, destructive, idempotent, open_world)

    def mark(func: F) -> F:
        is_async = inspect.iscoroutinefunction(func)
        if not is_async:
            raise TypeError(f"tool {func.__qualname__} must be an async def")
        setattr(func, _MARK, options)
        return func

    return mark(fn) if fn is not None else mark


@dataclass(frozen=True, slots=True)
class ToolDef:
    """A registered tool: its spec plus how to call it."""

    name: str
    method_name: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    wants_context: bool
    spec: ToolSpec


def _check_model(owner: str, role: str, model: Any) -> type[BaseModel]:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{owner}: the {role} must be annotated with a pydantic model, got {model!r}")
    if model.model_config.get("extra") != "forbid":
        raise TypeError(f"{owner}: {role} model {model.__name__} must forbid unknown fields")
    return model


def _build(func: Callable[..., Any], options: _ToolOptions, context_type: type) -> ToolDef:
    owner = func.__qualname__
    hints = typing.get_type_hints(func)
    params = list(inspect.signature(func).parameters.values())[1:]  # drop self
    if not 1 <= len(params) <= 2:
        raise TypeError(f"{owner}: a tool takes (self, params[, ctx]), got {len(params)} parameters")
    input_model = _check_model(owner, "input", hints.get(params[0].name))
    wants_context = len(params) == 2
    if wants_context and hints.get(params[1].name) is not context_type:
        raise TypeError(f"{owner}: the second parameter must be annotated as CallContext")
    output_model = _check_model(owner, "output", hints.get("return"))
    name = options.name or func.__name__
    doc = inspect.getdoc(func)
    if not doc:
        raise TypeError(f"{owner}: a tool needs a docstring (it becomes the tool description)")
    spec = ToolSpec(
        name=name,
        title=options.title,
        description=doc,
        input_schema=input_model.model_json_schema(),
        output_schema=output_model.model_json_schema(mode="serialization"),
        annotations=ToolAnnotations(
            title=options.title,
            read_only_hint=options.read_only,
            destructive_hint=False if options.read_only else options.destructive,
            idempotent_hint=True if options.read_only else options.idempotent,
            open_world_hint=options.open_world,
        ),
    )
    return ToolDef(name, func.__name__, input_model, output_model, wants_context, spec)


class ToolRegistry:
    """The tools of one agent class; duplicate names are an error, not a silent override."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolDef] = {}

    @classmethod
    def from_class(cls, klass: type, context_type: type) -> ToolRegistry:
        registry = cls()
        seen: set[str] = set()
        for klass_ in klass.__mro__:
            for attr, value in vars(klass_).items():
                options = getattr(value, _MARK, None)
                if options is None or attr in seen:
                    continue
                seen.add(attr)
                registry.add(_build(value, options, context_type))
        return registry

    def add(self, definition: ToolDef) -> None:
        if definition.name in self._tools:
            raise ValueError(f"duplicate tool name {definition.name!r}")
        self._tools[definition.name] = definition

    def get(self, name: str) -> ToolDef | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [self._tools[n].spec for n in self.names()]

    def __iter__(self) -> Iterator[ToolDef]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)
