"""The ``meetara`` Typer app: global options, settings, and turning errors into one clear line."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio
import anyio.abc
import typer
from pydantic import ValidationError
from rich.console import Console

from protocol import MeetaraError, RpcError, Unavailable
from runtime._catalog import CatalogError
from runtime._client import ToolFailed
from runtime._discovery import AgentNotFound
from runtime._logging import configure_logging
from runtime._settings import Settings

__all__ = ["State", "app", "console", "err_console", "run_async", "state"]

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="meetara",
    help="MeeTARA Lab: a swarm of agents that turns domains into deployed GGUF models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class State:
    """Global options, resolved into settings on first use (inside the error handler)."""

    config_file: Path | None = None
    bus_url: str | None = None
    namespace: str | None = None
    log_level: str | None = None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            overrides: dict[str, Any] = {}
            if self.bus_url:
                overrides["bus_url"] = self.bus_url
            if self.log_level:
                overrides["log_level"] = self.log_level
            settings = Settings.load(self.config_file, **overrides)
            if self.namespace:
                bus = settings.bus.model_copy(update={"namespace": self.namespace})
                settings = settings.model_copy(update={"bus": bus})
            self._settings = settings
        return self._settings

    def child_env(self) -> dict[str, str]:
        """Environment for agent subprocesses so they see the same settings as this process."""
        env = dict(os.environ)
        s = self.settings
        env["MEETARA_BUS_URL"] = s.bus_url
        env["MEETARA_BUS__NAMESPACE"] = s.bus.namespace
        env["MEETARA_LOG_FORMAT"] = s.log_format
        env["MEETARA_LOG_LEVEL"] = s.log_level
        if self.config_file is not None:
            env["MEETARA_CONFIG"] = str(self.config_file.resolve())
        env.pop("MEETARA_INSTANCE_ID", None)  # each child needs its own
        return env


state = State()


@app.callback()
def _global_options(
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file (else $MEETARA_CONFIG).")] = None,
    bus_url: Annotated[
        str | None, typer.Option("--bus-url", help="memory://NAME or redis://…  (else $MEETARA_BUS_URL).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Key namespace (else $MEETARA_BUS__NAMESPACE).")
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning, error.")] = None,
) -> None:
    state.config_file = config
    state.bus_url = bus_url
    state.namespace = namespace
    state.log_level = log_level
    state._settings = None


def _fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def run_async(func: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """Run an async command body with logging configured and errors turned into one line."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            settings = state.settings
            configure_logging(format=settings.log_format, level=settings.log_level)
            return anyio.run(functools.partial(func, *args, **kwargs))
        except Unavailable as exc:
            raise _fail(exc.message, 2) from None
        except (ValidationError, FileNotFoundError, CatalogError, AgentNotFound) as exc:
            raise _fail(str(exc).strip(), 2) from None
        except ToolFailed as exc:
            raise _fail(str(exc), 1) from None
        except RpcError as exc:
            raise _fail(f"{exc.message} (code {exc.code})", 1) from None
        except MeetaraError as exc:
            raise _fail(str(exc), 1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper
