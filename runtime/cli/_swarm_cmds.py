"""Commands that run agents: ``agent`` (one process), ``up`` (all, as subprocesses), ``run`` (embedded)."""

from __future__ import annotations

import sys
from typing import Annotated

import anyio
import anyio.abc
import structlog
import typer

from protocol import Unavailable
from runtime._discovery import agent_names, load_agent_class
from runtime._host import AgentHost
from runtime._lifecycle import stop_on_signal
from runtime._supervisor import Supervisor
from runtime._swarm import connect, open_swarm
from runtime.cli._app import app, console, run_async, state
from runtime.cli._client_cmds import (
    AllowRegression,
    Generator,
    TeacherKeyEnv,
    TeacherModel,
    TeacherUrl,
    data_arguments,
    job_arguments,
    submit_and_follow,
)
from runtime.cli._render import agents_table, tools_table
from runtime.cli._session import is_embedded

log = structlog.get_logger("cli")


def _require_broker(command: str) -> None:
    if is_embedded(state.settings):
        raise Unavailable(
            f"`meetara {command}` runs agents as separate processes, which need a shared broker: "
            "set MEETARA_BUS_URL=redis://HOST:PORT/0 (or use `meetara run` for the embedded swarm)"
        )


async def _wait_for_broker(max_wait_s: float) -> None:
    """Agents may start before Redis (compose): retry with a clear line until it answers."""
    settings = state.settings
    deadline = anyio.current_time() + max_wait_s
    delay = 0.5
    while True:
        try:
            async with connect(settings, sender="probe"):
                return
        except Unavailable as exc:
            if anyio.current_time() + delay > deadline:
                raise
            log.warning("waiting for the broker", error=exc.message, retry_in_s=delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)


@app.command()
@run_async
async def agent(
    name: Annotated[str, typer.Argument(help="Agent to run: " + ", ".join(agent_names()))],
    wait_for_broker: Annotated[
        float, typer.Option(help="Seconds to keep retrying an unreachable broker before giving up.")
    ] = 60.0,
) -> None:
    """Run one agent process until SIGTERM/SIGINT (then finish or release in-flight work)."""
    _require_broker("agent")
    klass = load_agent_class(name)
    await _wait_for_broker(wait_for_broker)
    settings = state.settings
    async with connect(settings, sender=name) as bus:
        host = AgentHost(bus, [klass], settings=settings)
        await bus.start_task(stop_on_signal, host.stop)
        await host.run()


@app.command()
@run_async
async def up(
    agents: Annotated[
        str | None, typer.Option(help="Comma-separated agents to start (default: all installed).")
    ] = None,
    replicas: Annotated[list[str] | None, typer.Option(help="NAME=N replicas of an agent (repeatable).")] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for every agent to register.")] = 60.0,
) -> None:
    """Start every agent as its own local process against Redis (the compose swarm without Docker)."""
    _require_broker("up")
    names = [n.strip() for n in agents.split(",")] if agents else agent_names()
    for n in names:
        load_agent_class(n)  # fail fast on a typo
    counts = dict.fromkeys(names, 1)
    for spec in replicas or []:
        name, _, n = spec.partition("=")
        if name not in counts or not n.isdigit() or int(n) < 1:
            raise typer.BadParameter(f"--replicas {spec!r}: expected NAME=N for a started agent")
        counts[name] = int(n)
    await _wait_for_broker(10.0)
    supervisor = Supervisor(state.settings, counts, env=state.child_env(), python=sys.executable)
    await supervisor.run(ready_timeout=ready_timeout, on_ready=lambda rows: console.print(agents_table(rows)))


@app.command()
@run_async
async def run(
    domain: Annotated[str | None, typer.Option(help="Train, validate and deploy this domain end to end.")] = None,
    category: Annotated[str | None, typer.Option(help="The same for one model of a whole category.")] = None,
    universal: Annotated[bool, typer.Option("--universal", help="The same for the universal models.")] = False,
    tier: Annotated[str, typer.Option(help="lightning, fast, balanced or quality.")] = "lightning",
    base_model: Annotated[str | None, typer.Option(help="Base model path, hub id or GGUF file.")] = None,
    samples: Annotated[
        int | None, typer.Option(help="Training conversations per domain (default: sized to the device).")
    ] = None,
    generator: Generator = None,
    teacher_url: TeacherUrl = None,
    teacher_model: TeacherModel = None,
    teacher_api_key_env: TeacherKeyEnv = None,
    allow_regression: AllowRegression = False,
) -> None:
    """Run the whole swarm in this process on the in-memory bus.

    With --domain (or --category, --universal) it runs that job to the end (live progress,
    then the report); without, it lists the agents and their tools.
    """
    data = data_arguments(generator, teacher_url, teacher_model, teacher_api_key_env)  # bad flags: refused now
    settings = state.settings
    if not is_embedded(settings):
        settings = settings.model_copy(update={"bus_url": "memory://embedded"})
    classes = [load_agent_class(n) for n in agent_names()]
    async with open_swarm(settings, classes) as swarm:
        if domain is not None or category is not None or universal:
            arguments = job_arguments(domain, category, universal, tier, base_model, samples)
            arguments.update(data)
            if allow_regression:
                arguments["allow_regression"] = True
            await submit_and_follow(swarm.client, arguments, wait=True)
            return
        instances = await swarm.client.agents()
        console.print(agents_table(instances))
        for instance in instances:
            console.print(tools_table(instance.name, await swarm.client.list_tools(instance.name)))
